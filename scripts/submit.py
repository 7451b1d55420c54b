"""Submit a sweep (scripts/sweeps/<name>.yaml) to Slurm as job arrays, and report its status.

    python scripts/submit.py table1 --scale small --dry-run   # print manifests and sbatch scripts
    python scripts/submit.py table1 --scale small             # submit (one array per task)
    python scripts/submit.py table1 --scale small --status    # done / running / failed per cell
    python scripts/submit.py table1 --scale small --local 2   # no Slurm: run here, 2 at a time
    python scripts/submit.py table1 --local 2 --dry-run       # print the commands, run nothing
    python scripts/submit.py table1 --rerun-stale --dry-run   # the stale cells' reruns

A sweep lists tasks x optims x seeds x overrides and sbatch resources per scale and task. Every
cell is composed with Hydra exactly as ``run.py`` would, so its run directory and record path
are the ones a local run uses. Cells whose record exists, whose run diverged (its crash note
exists: the same seed would diverge again; delete the note to retry), or that are queued or
running from an earlier submission, are skipped: resubmitting is idempotent. Each array task
runs one manifest
line with ``resume=auto``; its log lands beside the run (``<run_dir>/slurm-<job>_<task>.log``),
with its exit code in ``<run_dir>/exit_code``. Preemption: the script asks Slurm for
``--signal=B:USR2@<warn>`` and ``--requeue``; the batch shell forwards USR2/TERM to the run,
which checkpoints (and on USR2 requeues itself); the requeued task resumes.

``--status`` also marks the done cells whose record is stale (code that affects its task changed
since it ran), dirty or of unknown provenance (sweep_status.py); ``--rerun-stale`` reruns the
stale ones, with ``overwrite=true``, on Slurm or (``--local``) here.

``--dry-run`` prints what would be submitted (or, with ``--local``, run) and never runs, writes
or submits anything. A bad flag, sweep file (checked in sweep_file.py) or scale is one line
naming the problem and the fix, before any cell runs or any job is submitted.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys

from scripts.sweep_file import (
    ARRAY_SCRIPT,
    ROOT,
    THP_ENV,
    SweepError,
    cells,  # noqa: F401  (submit.cells: the tests expand sweeps through this module)
    check_scale,
    known,
    load_sweep,
    resources,
    sbatch_lines,
)
from scripts.sweep_status import print_status, status, sweep_dir, todo


def submit(sweep: dict, scale: str, *, dry_run: bool, parallel: int | None,
           rerun_stale: bool = False) -> list[int]:
    """Submit the missing or failed cells (with ``rerun_stale``: the stale cells' reruns,
    sweep_status.todo), one array job per task; returns the job ids. With ``dry_run`` print
    each manifest and array script instead, and write or submit nothing."""
    for task in sweep["tasks"]:
        if not resources(sweep, scale, task):
            have = ", ".join(sweep.get("resources") or {}) or "none"
            raise SweepError(f"sweep {sweep.get('file', sweep['name'])} has no resources for "
                             f"{task} at scale {scale} (scales with resources: {have}); add "
                             f"resources: {scale}: default: {{cpus: ..., mem: ..., time: ...}}, "
                             "or run here with --local JOBS")
    if not dry_run and shutil.which("sbatch") is None:
        raise SweepError("sbatch not found: run this on a Slurm login node, or run here with "
                         "--local JOBS, or add --dry-run to see the scripts")
    sdir = sweep_dir(sweep, scale)
    rows = status(sweep, scale)
    chosen = todo(rows, rerun_stale)
    note = " (dry run: nothing is written or submitted)" if dry_run else ""
    what = (f"{len(chosen)} stale to rerun with overwrite=true" if rerun_stale else
            f"{len(rows) - len(chosen)} done or queued, {len(chosen)} to submit")
    print(f"{sweep['name']} ({scale}): {len(rows)} cells, {what}{note}")
    job_ids = []
    for task in sweep["tasks"]:
        mine = [r for r in chosen if r["task"] == task]
        if not mine:
            continue
        res = resources(sweep, scale, task)
        n = len(mine)
        stamp = f"{task}-{len(list(sdir.glob(f'manifest-{task}-*.tsv'))) + 1}"
        manifest = sdir / f"manifest-{stamp}.tsv"
        script = ARRAY_SCRIPT.format(
            job_name=f"solo-{sweep['name']}-{task}", n=n,
            parallel=parallel or sweep.get("parallel") or n, sweep_dir=sdir,
            warn=res.get("warn", 120), resources=sbatch_lines(res), root=ROOT, manifest=manifest)
        lines = [f"{r['run_dir']}\t{r['record']}\t{r['cmd']}" for r in mine]
        if dry_run:
            print(f"--- {manifest}\n" + "\n".join(lines) + f"\n--- array-{stamp}.sbatch\n{script}")
            continue
        script_path = sdir / f"array-{stamp}.sbatch"
        try:
            sdir.mkdir(parents=True, exist_ok=True)
            manifest.write_text("\n".join(lines) + "\n")
            script_path.write_text(script)
        except OSError as e:
            raise SweepError(f"cannot write the sweep folder {sdir} ({e.strerror}); set "
                             "SOLO_OUTPUTS_DIR to a writable folder") from None
        out = subprocess.run(["sbatch", "--parsable", str(script_path)],
                             capture_output=True, text=True)
        if out.returncode:  # nothing was queued: leave no manifest that looks submitted
            manifest.unlink()
            script_path.unlink()
            raise SweepError(f"sbatch refused {task}'s array job (exit {out.returncode}): "
                             f"{' '.join(out.stderr.split())}; fix that, then submit again")
        job_id = int(out.stdout.strip().split(";")[0])
        (sdir / f"submitted-{stamp}.json").write_text(
            json.dumps({"job_id": job_id, "manifest": str(manifest), "cells": n}))
        print(f"submitted {task}: array job {job_id} ({n} tasks), script {script_path}")
        job_ids.append(job_id)
    return job_ids


def run_local(sweep: dict, scale: str, jobs: int, *, dry_run: bool = False,
              rerun_stale: bool = False) -> int:
    """Run the missing cells (with ``rerun_stale``: the stale cells' reruns) on this machine,
    ``jobs`` at a time (no Slurm); returns failures. With ``dry_run`` print their commands
    instead, and run or write nothing."""
    from concurrent.futures import ThreadPoolExecutor

    chosen = todo(status(sweep, scale), rerun_stale)
    if dry_run:
        print(f"{sweep['name']} ({scale}): {len(chosen)} cells would run here, {jobs} at a time "
              "(dry run: nothing runs)")
        for cell in chosen:
            print(cell["cmd"])
        return 0
    for cell in chosen:  # an unwritable outputs folder stops the sweep before any run starts
        try:
            cell["run_dir"].mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise SweepError(f"cannot create the run folder {cell['run_dir']} ({e.strerror}); "
                             "set SOLO_OUTPUTS_DIR to a writable folder") from None
    print(f"{sweep['name']} ({scale}): {len(chosen)} cells to run here, {jobs} at a time")

    def one(cell):
        log = cell["run_dir"] / "local.log"
        with open(log, "a") as f:
            # one OpenMP thread per run unless told otherwise (small models on shared cores), and
            # PyTorch's huge-page allocations (THP_ENV: the same numbers, less system time)
            env = {"OMP_NUM_THREADS": "1", **THP_ENV, **os.environ}
            rc = subprocess.run(cell["cmd"], shell=True, stdout=f, stderr=subprocess.STDOUT,
                                cwd=ROOT, env=env).returncode
        (cell["run_dir"] / "exit_code").write_text(f"{rc}\n")
        print(f"{'done' if rc == 0 else f'FAILED ({rc})':12s} {cell['task']} {cell['optim']} "
              f"seed={cell['seed']} {' '.join(cell['overrides'])}  log: {log}", flush=True)
        return rc

    finished = []
    try:
        with ThreadPoolExecutor(max_workers=jobs) as pool:
            for rc in pool.map(one, chosen):  # on Ctrl-C, map cancels the cells not started
                finished.append(rc)
    except KeyboardInterrupt:
        print(f"interrupted: {len(finished)} of {len(chosen)} cells finished and no more start "
              "(running ones got the Ctrl-C too); run the same command again for the rest "
              "(resume=auto continues each from its last checkpoint)", file=sys.stderr)
        raise SystemExit(130) from None
    return sum(rc != 0 for rc in finished)


def positive_int(text: str) -> int:
    """argparse type for a count (jobs, array tasks): an integer >= 1, else a usage error."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer; give a whole number "
                                         ">= 1") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not allowed; give a whole number >= 1")
    return value


def parse_args(argv=None) -> argparse.Namespace:
    """The command line, with every conflicting or out-of-range flag a usage error (exit 2)."""
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("sweep", help="name in scripts/sweeps/ (or a path to a YAML)")
    ap.add_argument("--scale", default=None, choices=known("scale"),
                    help="the scale to run (default: the sweep's)")
    ap.add_argument("--dry-run", action="store_true",
                    help="print what would be submitted (or, with --local, run); do nothing")
    ap.add_argument("--status", action="store_true", help="list every cell's state")
    ap.add_argument("--parallel", type=positive_int, metavar="P",
                    help="at most P array tasks of a job at once (Slurm only)")
    ap.add_argument("--local", type=positive_int, metavar="JOBS", help="no Slurm: run the "
                    "missing cells on this machine, JOBS at a time")
    ap.add_argument("--task", action="append", help="only these tasks of the sweep (repeatable)")
    ap.add_argument("--rerun-stale", action="store_true", help=(
        "rerun, with overwrite=true, the done cells whose record is stale: a file that affects "
        "its task changed since it ran (--status lists them); each in a fresh run folder, "
        "<run_dir>/rerun-<code hash>. On Slurm, or here with --local. Records of unknown "
        "provenance (made before records named their code) are not rerun: delete such a "
        "record to run its cell again. Dirty records whose code is the current one are not "
        "stale"))
    args = ap.parse_args(argv)
    if args.status and args.rerun_stale:
        ap.error("--status only reports and --rerun-stale runs cells: give one of them")
    if args.status and args.local:
        ap.error("--status only reports and --local runs cells: give one of them")
    if args.status and args.parallel:
        ap.error("--status only reports, --parallel caps Slurm array tasks: drop --parallel")
    if args.local and args.parallel:
        ap.error("--parallel caps Slurm array tasks; with --local, JOBS is the cap: "
                 "drop --parallel")
    return args


def main(argv=None) -> None:
    """The command line (``argv``, default ``sys.argv[1:]``); see the module docstring."""
    args = parse_args(argv)
    try:
        sweep = load_sweep(args.sweep)
        if args.task:
            unknown = sorted(set(args.task) - set(sweep["tasks"]))
            if unknown:
                raise SweepError(f"--task {', '.join(unknown)}: not in the sweep's tasks; give "
                                 f"one of {', '.join(sweep['tasks'])}")
            sweep["tasks"] = [t for t in sweep["tasks"] if t in args.task]
        scale = args.scale or sweep.get("scale", "small")
        check_scale(sweep, scale)
        if args.status:
            print_status(sweep, scale)
        elif args.local:
            failed = run_local(sweep, scale, args.local, dry_run=args.dry_run,
                               rerun_stale=args.rerun_stale)
            raise SystemExit(1 if failed else 0)
        else:
            submit(sweep, scale, dry_run=args.dry_run, parallel=args.parallel,
                   rerun_stale=args.rerun_stale)
    except SweepError as err:  # the user's to fix: one line, no traceback, exit status 1
        raise SystemExit(f"error: {err}") from None


if __name__ == "__main__":
    main()
