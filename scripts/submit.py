"""Submit a sweep (scripts/sweeps/<name>.yaml) to Slurm as job arrays, and report its status.

    python scripts/submit.py table1 --scale small --dry-run   # print manifests and sbatch scripts
    python scripts/submit.py table1 --scale small             # submit (one array per task)
    python scripts/submit.py table1 --scale small --status    # done / running / failed per cell
    python scripts/submit.py table1 --scale small --local 2   # no Slurm: run here, 2 at a time

A sweep lists tasks x optims x seeds x overrides and sbatch resources per scale and task. Every
cell is composed with Hydra exactly as ``run.py`` would, so its run directory and record path
are the ones a local run uses. Cells whose record exists, or that are queued or running from an
earlier submission, are skipped: resubmitting is idempotent. Each array task runs one manifest
line with ``resume=auto``; its log lands beside the run (``<run_dir>/slurm-<job>_<task>.log``),
with its exit code in ``<run_dir>/exit_code``. Preemption: the script asks Slurm for
``--signal=B:USR2@<warn>`` and ``--requeue``; the batch shell forwards USR2/TERM to the run,
which checkpoints (and on USR2 requeues itself); the requeued task resumes.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
SWEEPS = ROOT / "scripts" / "sweeps"
sys.path.insert(0, str(ROOT))

ARRAY_SCRIPT = """#!/bin/bash
#SBATCH --job-name={job_name}
#SBATCH --array=1-{n}%{parallel}
#SBATCH --output={sweep_dir}/slurm-%A_%a.out
#SBATCH --open-mode=append
#SBATCH --requeue
#SBATCH --signal=B:USR2@{warn}
{resources}
# One manifest line per array task: run_dir <TAB> record <TAB> command.
set -u
cd {root}
IFS=$'\\t' read -r run_dir record cmd < <(sed -n "${{SLURM_ARRAY_TASK_ID}}p" {manifest})
mkdir -p "$run_dir"
rm -f "$run_dir/exit_code"
log="$run_dir/slurm-${{SLURM_ARRAY_JOB_ID}}_${{SLURM_ARRAY_TASK_ID}}.log"
echo "[$(date -Is)] job $SLURM_JOB_ID start (restart ${{SLURM_RESTART_COUNT:-0}}) on $(hostname): $cmd" >> "$log"
export PYTHONUNBUFFERED=1
eval "exec $cmd" >> "$log" 2>&1 &
child=$!
# Slurm signals the batch shell (B:USR2, requeue/preemption TERM): pass them on to the run.
trap 'kill -USR2 $child 2>/dev/null' USR2
trap 'kill -TERM $child 2>/dev/null' TERM
wait $child; rc=$?
while kill -0 $child 2>/dev/null; do wait $child; rc=$?; done
echo "[$(date -Is)] job $SLURM_JOB_ID exit $rc" >> "$log"
echo $rc > "$run_dir/exit_code"
exit $rc
"""


def load_sweep(name: str) -> dict:
    path = Path(name)
    if not path.suffix:
        path = SWEEPS / f"{name}.yaml"
    if not path.exists():
        have = ", ".join(sorted(p.stem for p in SWEEPS.glob("*.yaml")))
        raise SystemExit(f"sweep not found: {path}; available: {have}")
    sweep = yaml.safe_load(path.read_text())
    sweep.setdefault("name", path.stem)
    for key in ("tasks", "optims", "seeds"):
        if not sweep.get(key):
            raise SystemExit(f"sweep {path}: missing or empty key {key!r}")
    return sweep


def compose_cells(overrides: list[list[str]]) -> list[tuple[Path, Path]]:
    """(run_dir, record_path) that run.py would use, for each list of overrides."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import OmegaConf, open_dict

    from experiments import register_configs
    from experiments.records import record_path

    register_configs()
    out = []
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        for ov in overrides:
            cfg = compose("config", overrides=ov, return_hydra_config=True)
            HydraConfig.instance().set_config(cfg)
            run_dir = Path(OmegaConf.select(cfg, "hydra.run.dir"))
            with open_dict(cfg):
                cfg.optim_name = OmegaConf.select(cfg, "hydra.runtime.choices.optim")
                cfg.variant = str(cfg.variant)  # resolved while the hydra node is here
                del cfg.hydra
            out.append((run_dir if run_dir.is_absolute() else ROOT / run_dir,
                        ROOT / record_path(cfg)))
    return out


def cells(sweep: dict, scale: str) -> list[dict]:
    """Every (task, optim, seed, overrides) of the sweep, with its command and paths."""
    grid = list(itertools.product(sweep["tasks"], sweep["optims"], sweep["seeds"],
                                  sweep.get("overrides") or [[]]))
    per_task = sweep.get("fixed_per_task") or {}
    overrides = [[f"task={task}", f"optim={optim}", f"scale={scale}", f"seed={seed}", *extra,
                  *sweep.get("fixed", []), *per_task.get(task, [])]
                 for task, optim, seed, extra in grid]
    out = []
    for (task, optim, seed, extra), ov, (run_dir, record) in zip(grid, overrides,
                                                                  compose_cells(overrides)):
        gpus = int(resources(sweep, scale, task).get("gpus", 0))
        launch = ([str(ROOT / ".venv/bin/torchrun"), "--standalone", f"--nproc_per_node={gpus}"]
                  if gpus > 1 else [sys.executable])
        cmd = shlex.join([*launch, str(ROOT / "run.py"), *ov, "resume=auto"])
        out.append({"task": task, "optim": optim, "seed": seed, "overrides": list(extra),
                    "run_dir": run_dir, "record": record, "cmd": cmd})
    return out


def resources(sweep: dict, scale: str, task: str) -> dict:
    per_scale = (sweep.get("resources") or {}).get(scale) or {}
    return {**(per_scale.get("default") or {}), **(per_scale.get(task) or {})}


def sbatch_lines(res: dict) -> str:
    flags = {"time": "--time", "cpus": "--cpus-per-task", "mem": "--mem",
             "partition": "--partition", "account": "--account", "qos": "--qos"}
    lines = [f"#SBATCH {flags[k]}={v}" for k, v in res.items() if k in flags]
    if int(res.get("gpus", 0)):
        lines.append(f"#SBATCH --gres=gpu:{int(res['gpus'])}")
    unknown = set(res) - set(flags) - {"gpus", "warn"}
    if unknown:
        raise SystemExit(f"unknown resource keys {sorted(unknown)}; allowed: "
                         f"{sorted([*flags, 'gpus', 'warn'])}")
    return "\n".join(lines)


def sweep_dir(sweep: dict, scale: str) -> Path:
    base = Path(os.environ.get("SOLO_OUTPUTS_DIR", ROOT / "outputs"))
    return base / "sweeps" / sweep["name"] / scale


def queued(sdir: Path) -> dict[str, str]:
    """run_dir -> Slurm state for cells of earlier submissions still pending or running."""
    states = {}
    for sub in sorted(sdir.glob("submitted-*.json")):
        info = json.loads(sub.read_text())
        try:
            q = subprocess.run(["squeue", "-h", "-r", "-j", str(info["job_id"]), "-o", "%K %T"],
                               capture_output=True, text=True)
        except FileNotFoundError:  # no Slurm client here: nothing can be queued
            return {}
        if q.returncode:
            continue  # the array left the queue (squeue errors on unknown job ids)
        lines = Path(info["manifest"]).read_text().splitlines()
        for entry in q.stdout.strip().splitlines():
            task_id, state = entry.split()
            if task_id.isdigit() and int(task_id) <= len(lines):
                states[lines[int(task_id) - 1].split("\t")[0]] = state
    return states


def _valid(path: Path) -> bool:
    """Whether the record at ``path`` passes the schema: a torn or foreign file is no result,
    so its cell runs again (and the run rewrites it)."""
    from experiments.records import RecordError, load_record

    try:
        load_record(path)
    except RecordError as e:
        print(f"NOTE: not counted as done: {e}", file=sys.stderr)
        return False
    return True


def status(sweep: dict, scale: str) -> list[dict]:
    sdir = sweep_dir(sweep, scale)
    active = queued(sdir)
    rows = []
    for c in cells(sweep, scale):
        exit_file = c["run_dir"] / "exit_code"
        logs = sorted(c["run_dir"].glob("slurm-*.log"), key=lambda p: p.stat().st_mtime)
        if c["record"].exists() and _valid(c["record"]):
            state = "done"
        elif str(c["run_dir"]) in active:
            state = active[str(c["run_dir"])].lower()
        elif exit_file.exists() and exit_file.read_text().strip() != "0":
            state = "failed"
        else:
            state = "not submitted"
        rows.append({**c, "state": state, "log": str(logs[-1]) if logs else None})
    return rows


def submit(sweep: dict, scale: str, *, dry_run: bool, parallel: int | None) -> list[int]:
    sdir = sweep_dir(sweep, scale)
    rows = status(sweep, scale)
    todo = [r for r in rows if r["state"] in ("not submitted", "failed")]
    skipped = len(rows) - len(todo)
    print(f"{sweep['name']} ({scale}): {len(rows)} cells, {skipped} done or queued, "
          f"{len(todo)} to submit")
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
            parallel=parallel or sweep.get("parallel", n), sweep_dir=sdir, warn=res.get("warn", 120),
            resources=sbatch_lines(res), root=ROOT, manifest=manifest)
        lines = [f"{r['run_dir']}\t{r['record']}\t{r['cmd']}" for r in mine]
        if dry_run:
            print(f"--- {manifest}\n" + "\n".join(lines) + f"\n--- array-{stamp}.sbatch\n{script}")
            continue
        sdir.mkdir(parents=True, exist_ok=True)
        manifest.write_text("\n".join(lines) + "\n")
        script_path = sdir / f"array-{stamp}.sbatch"
        script_path.write_text(script)
        try:
            out = subprocess.run(["sbatch", "--parsable", str(script_path)],
                                 capture_output=True, text=True)
        except FileNotFoundError:
            raise SystemExit("sbatch not found: run this on a Slurm login node (or use "
                             "--dry-run to see the scripts)") from None
        if out.returncode:
            raise SystemExit(f"sbatch failed for {script_path}: {out.stderr.strip()}")
        job_id = int(out.stdout.strip().split(";")[0])
        (sdir / f"submitted-{stamp}.json").write_text(
            json.dumps({"job_id": job_id, "manifest": str(manifest), "cells": n}))
        print(f"submitted {task}: array job {job_id} ({n} tasks), script {script_path}")
        job_ids.append(job_id)
    return job_ids


def run_local(sweep: dict, scale: str, jobs: int) -> int:
    """Run the missing cells on this machine, ``jobs`` at a time (no Slurm); returns failures."""
    from concurrent.futures import ThreadPoolExecutor

    todo = [r for r in status(sweep, scale) if r["state"] in ("not submitted", "failed")]
    print(f"{sweep['name']} ({scale}): {len(todo)} cells to run here, {jobs} at a time")

    def one(cell):
        cell["run_dir"].mkdir(parents=True, exist_ok=True)
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

    with ThreadPoolExecutor(max_workers=jobs) as pool:
        return sum(rc != 0 for rc in pool.map(one, todo))


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("sweep", help="name in scripts/sweeps/ (or a path to a YAML)")
    ap.add_argument("--scale", default=None, help="smoke | small | paper (default: the sweep's)")
    ap.add_argument("--dry-run", action="store_true", help="print, submit nothing")
    ap.add_argument("--status", action="store_true", help="list every cell's state")
    ap.add_argument("--parallel", type=int, help="at most this many array tasks at once")
    ap.add_argument("--local", type=int, metavar="JOBS", help="no Slurm: run the missing "
                    "cells on this machine, JOBS at a time")
    ap.add_argument("--task", action="append", help="only these tasks of the sweep (repeatable)")
    args = ap.parse_args(argv)
    sweep = load_sweep(args.sweep)
    if args.task:
        unknown = set(args.task) - set(sweep["tasks"])
        if unknown:
            raise SystemExit(f"--task {sorted(unknown)} not in the sweep's tasks {sweep['tasks']}")
        sweep["tasks"] = [t for t in sweep["tasks"] if t in args.task]
    scale = args.scale or sweep.get("scale", "small")
    if args.status:
        rows = status(sweep, scale)
        for r in rows:
            cell = " ".join([r["task"], r["optim"], f"seed={r['seed']}", *r["overrides"]])
            extra = f"  log: {r['log']}" if r["state"] == "failed" and r["log"] else ""
            print(f"{r['state']:14s} {cell}{extra}")
        counts = {s: sum(r["state"] == s for r in rows) for s in sorted({r["state"] for r in rows})}
        print(f"{len(rows)} cells: " + ", ".join(f"{v} {k}" for k, v in counts.items()))
        return
    if args.local:
        raise SystemExit(1 if run_local(sweep, scale, args.local) else 0)
    submit(sweep, scale, dry_run=args.dry_run, parallel=args.parallel)


if __name__ == "__main__":
    main()
