"""Submit a sweep (scripts/sweeps/<name>.yaml) to Slurm as job arrays, and report its status.

    python scripts/submit.py table1 --scale small --dry-run   # print manifests and sbatch scripts
    python scripts/submit.py table1 --scale small             # submit (one array per task)
    python scripts/submit.py table1 --scale small --status    # done / running / failed per cell
    python scripts/submit.py table1 --scale small --local 2   # no Slurm: run here, 2 at a time
    python scripts/submit.py table1 --local 2 --dry-run       # print the commands, run nothing

A sweep lists tasks x optims x seeds x overrides and sbatch resources per scale and task. Every
cell is composed with Hydra exactly as ``run.py`` would, so its run directory and record path
are the ones a local run uses. Cells whose record exists, whose run diverged (its crash note
exists: the same seed would diverge again; delete the note to retry), or that are queued or
running from an earlier submission, are skipped: resubmitting is idempotent. Each array task runs one manifest
line with ``resume=auto``; its log lands beside the run (``<run_dir>/slurm-<job>_<task>.log``),
with its exit code in ``<run_dir>/exit_code``. Preemption: the script asks Slurm for
``--signal=B:USR2@<warn>`` and ``--requeue``; the batch shell forwards USR2/TERM to the run,
which checkpoints (and on USR2 requeues itself); the requeued task resumes.

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
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent)]  # sweep_file.py; experiments/

from sweep_file import (  # noqa: E402
    ARRAY_SCRIPT,
    ROOT,
    SweepError,
    cells,
    check_scale,
    known,
    load_sweep,
    resources,
    sbatch_lines,
)


def sweep_dir(sweep: dict, scale: str) -> Path:
    """Where the sweep's manifests, array scripts and submission notes go."""
    base = Path(os.environ.get("SOLO_OUTPUTS_DIR", ROOT / "outputs"))
    return base / "sweeps" / sweep["name"] / scale


def queued(sdir: Path) -> dict[str, str]:
    """run_dir -> Slurm state for cells of earlier submissions still pending or running."""
    states = {}
    for sub in sorted(sdir.glob("submitted-*.json")):
        try:
            info = json.loads(sub.read_text())
            job_id, manifest = int(info["job_id"]), Path(info["manifest"])
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise SweepError(f"cannot read the submission note {sub} ({type(e).__name__}: {e}); "
                             "delete it if that array job has left the queue") from None
        try:
            q = subprocess.run(["squeue", "-h", "-r", "-j", str(job_id), "-o", "%K %T"],
                               capture_output=True, text=True)
        except FileNotFoundError:  # no Slurm client here: nothing can be queued
            return {}
        if q.returncode or not manifest.is_file():
            continue  # the array left the queue (squeue errors on unknown job ids)
        lines = manifest.read_text().splitlines()
        for entry in q.stdout.strip().splitlines():
            task_id, state = entry.split()
            if task_id.isdigit() and int(task_id) <= len(lines):
                states[lines[int(task_id) - 1].split("\t")[0]] = state
    return states


def _valid(path: Path) -> bool:
    """Whether the record (or crash note) at ``path`` passes the schema: a torn or foreign file is no result,
    so its cell runs again (and the run rewrites it)."""
    from experiments.records import RecordError, load_record

    try:
        load_record(path)
    except RecordError as e:
        print(f"NOTE: not counted as done: {e}", file=sys.stderr)
        return False
    return True


def status(sweep: dict, scale: str) -> list[dict]:
    """Every cell of the sweep with its state: done, crashed (a crash note, no record), a Slurm
    state, failed or not submitted."""
    sdir = sweep_dir(sweep, scale)
    active = queued(sdir)
    rows = []
    for c in cells(sweep, scale):
        exit_file = c["run_dir"] / "exit_code"
        logs = sorted(c["run_dir"].glob("slurm-*.log"), key=lambda p: p.stat().st_mtime)
        note = c["record"].with_name(f"crash-{c['record'].name}")
        if c["record"].exists() and _valid(c["record"]):
            state = "done"
        elif note.exists() and _valid(note):
            state = "crashed"
        elif str(c["run_dir"]) in active:
            state = active[str(c["run_dir"])].lower()
        elif exit_file.exists() and exit_file.read_text().strip() != "0":
            state = "failed"
        else:
            state = "not submitted"
        rows.append({**c, "state": state, "log": str(logs[-1]) if logs else None})
    return rows


def submit(sweep: dict, scale: str, *, dry_run: bool, parallel: int | None) -> list[int]:
    """Submit the missing or failed cells, one array job per task; returns the job ids. With
    ``dry_run`` print each manifest and array script instead, and write or submit nothing."""
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
    todo = [r for r in rows if r["state"] in ("not submitted", "failed")]
    skipped = len(rows) - len(todo)
    note = " (dry run: nothing is written or submitted)" if dry_run else ""
    print(f"{sweep['name']} ({scale}): {len(rows)} cells, {skipped} done or queued, "
          f"{len(todo)} to submit{note}")
    job_ids = []
    for task in sweep["tasks"]:
        mine = [r for r in todo if r["task"] == task]
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


def run_local(sweep: dict, scale: str, jobs: int, *, dry_run: bool = False) -> int:
    """Run the missing cells on this machine, ``jobs`` at a time (no Slurm); returns failures.
    With ``dry_run`` print their commands instead, and run or write nothing."""
    from concurrent.futures import ThreadPoolExecutor

    todo = [r for r in status(sweep, scale) if r["state"] in ("not submitted", "failed")]
    if dry_run:
        print(f"{sweep['name']} ({scale}): {len(todo)} cells would run here, {jobs} at a time "
              "(dry run: nothing runs)")
        for cell in todo:
            print(cell["cmd"])
        return 0
    for cell in todo:  # an unwritable outputs folder stops the sweep before any run starts
        try:
            cell["run_dir"].mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise SweepError(f"cannot create the run folder {cell['run_dir']} ({e.strerror}); "
                             "set SOLO_OUTPUTS_DIR to a writable folder") from None
    print(f"{sweep['name']} ({scale}): {len(todo)} cells to run here, {jobs} at a time")

    def one(cell):
        log = cell["run_dir"] / "local.log"
        with open(log, "a") as f:
            # one OpenMP thread per run unless told otherwise: small models on shared cores
            env = {"OMP_NUM_THREADS": "1", **os.environ}
            rc = subprocess.run(cell["cmd"], shell=True, stdout=f, stderr=subprocess.STDOUT,
                                cwd=ROOT, env=env).returncode
        (cell["run_dir"] / "exit_code").write_text(f"{rc}\n")
        print(f"{'done' if rc == 0 else f'FAILED ({rc})':12s} {cell['task']} {cell['optim']} "
              f"seed={cell['seed']} {' '.join(cell['overrides'])}  log: {log}", flush=True)
        return rc

    finished = []
    try:
        with ThreadPoolExecutor(max_workers=jobs) as pool:
            for rc in pool.map(one, todo):  # on Ctrl-C, map cancels the cells not started
                finished.append(rc)
    except KeyboardInterrupt:
        print(f"interrupted: {len(finished)} of {len(todo)} cells finished and no more start "
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
    args = ap.parse_args(argv)
    if args.status and args.local:
        ap.error("--status only reports and --local runs cells: give one of them")
    if args.status and args.parallel:
        ap.error("--status only reports, --parallel caps Slurm array tasks: drop --parallel")
    if args.local and args.parallel:
        ap.error("--parallel caps Slurm array tasks; with --local, JOBS is the cap: "
                 "drop --parallel")
    return args


def print_status(sweep: dict, scale: str) -> None:
    """One line per cell (its state; the log of a failed one), then the counts."""
    rows = status(sweep, scale)
    for r in rows:
        cell = " ".join([r["task"], r["optim"], f"seed={r['seed']}", *r["overrides"]])
        extra = f"  log: {r['log']}" if r["state"] == "failed" and r["log"] else ""
        print(f"{r['state']:14s} {cell}{extra}")
    counts = {s: sum(r["state"] == s for r in rows) for s in sorted({r["state"] for r in rows})}
    print(f"{len(rows)} cells: " + ", ".join(f"{v} {k}" for k, v in counts.items()))


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
            raise SystemExit(1 if run_local(sweep, scale, args.local, dry_run=args.dry_run) else 0)
        else:
            submit(sweep, scale, dry_run=args.dry_run, parallel=args.parallel)
    except SweepError as err:  # the user's to fix: one line, no traceback, exit status 1
        raise SystemExit(f"error: {err}") from None


if __name__ == "__main__":
    main()
