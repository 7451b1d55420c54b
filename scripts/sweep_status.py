"""The state of a sweep's cells (``submit.py --status``), and which of them to (re)run.

A cell is done (its record exists and passes the schema), crashed (its crash note does), queued
or running in Slurm (from the sweep's submission notes), failed (its run folder's exit code is
not 0) or not submitted. A done cell's record is also checked against the code here (experiments.provenance):

* stale: a file that affects its task differs from the code that ran it (listed, first few);
* dirty: it ran with uncommitted changes to the code;
* provenance unknown: it names no code files (made before records named them).

``--rerun-stale`` reruns the stale cells (:func:`todo`): each with ``overwrite=true`` in a fresh
run folder, ``rerun-<code hash>`` inside its own, so that it never resumes the old run's final
checkpoint and a requeued job resumes its own.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

from scripts.sweep_file import ROOT, SweepError, cells

#: Changed files a status line names before "+N more".
SHOWN = 3


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


def _record(path: Path) -> dict | None:
    """The record at ``path`` if it passes the schema: a torn or foreign file is no result,
    so its cell runs again (and the run rewrites it)."""
    from experiments.records import RecordError, load_record

    try:
        return load_record(path)
    except RecordError as e:
        print(f"NOTE: not counted as done: {e}", file=sys.stderr)
        return None


def code_state(record: dict, current: dict[str, str]) -> dict:
    """{stale: files that affect the record's task and changed since it ran (None: unknown),
    dirty: whether it ran with uncommitted code changes}; ``current``: provenance.code_files."""
    from experiments.provenance import stale_files

    return {"stale": stale_files(record, current),
            "dirty": bool(record["provenance"].get("git_dirty"))}


def rerun_dir(run_dir: Path, code: str) -> Path:
    """The fresh run folder of a cell's rerun with the code of hash ``code``."""
    return run_dir / f"rerun-{code}"


def _failed(run_dir: Path) -> bool:
    exit_file = run_dir / "exit_code"
    return exit_file.exists() and exit_file.read_text().strip() != "0"


def status(sweep: dict, scale: str) -> list[dict]:
    """Every cell of the sweep with its state (done, crashed: a crash note and no record, a Slurm
    state, failed or not submitted);
    a done one with its code state (:func:`code_state`), ``rerun`` (its rerun folder) and
    ``rerun_state`` (that rerun's Slurm state, "failed" or None)."""
    from experiments import provenance

    active = queued(sweep_dir(sweep, scale))
    rows, current = [], None
    for c in cells(sweep, scale):
        logs = sorted(c["run_dir"].glob("slurm-*.log"), key=lambda p: p.stat().st_mtime)
        record = _record(c["record"]) if c["record"].exists() else None
        note = c["record"].with_name(f"crash-{c['record'].name}")
        extra = {}
        if record is not None:
            if current is None:  # hashing the code takes a moment: only with records
                current = provenance.code_files()
                rerun = rerun_dir(Path(), provenance.code_hash(current))
            state = "done"
            extra = {**code_state(record, current), "rerun": c["run_dir"] / rerun}
            extra["rerun_state"] = active.get(str(extra["rerun"]), "").lower() or (
                "failed" if _failed(extra["rerun"]) else None)
        elif note.exists() and _record(note) is not None:
            state = "crashed"  # a finished state: the same seed would diverge again
        elif str(c["run_dir"]) in active:
            state = active[str(c["run_dir"])].lower()
        elif _failed(c["run_dir"]):
            state = "failed"
        else:
            state = "not submitted"
        rows.append({**c, **extra, "state": state, "log": str(logs[-1]) if logs else None})
    return rows


def todo(rows: list[dict], rerun_stale: bool = False) -> list[dict]:
    """The cells to run: those not submitted or failed; with ``rerun_stale``, instead the done
    cells whose record is stale and whose rerun is not queued or running, each as its rerun (a fresh run
    folder, ``overwrite=true``). Records of unknown provenance are not rerun: every record made
    before records named their code is one, and rerunning them all is the whole sweep again."""
    if not rerun_stale:
        return [r for r in rows if r["state"] in ("not submitted", "failed")]
    out = []
    for r in rows:
        if r["state"] != "done" or not r["stale"] or r["rerun_state"] not in (None, "failed"):
            continue
        where = f'hydra.run.dir="{r["rerun"]}"'  # quoted: a variant's folder name has '='
        out.append({**r, "run_dir": r["rerun"],
                    "cmd": f"{r['cmd']} {shlex.join(['overwrite=true', where])}"})
    return out


def _shown(files: list[str]) -> str:
    more = f" +{len(files) - SHOWN} more" if len(files) > SHOWN else ""
    return ", ".join(files[:SHOWN]) + more


def code_note(row: dict) -> str:
    """What a done cell's status line says about its record's code ("" when fresh and clean)."""
    if row["state"] != "done":
        return ""
    notes = []
    if row["stale"] is None:
        notes.append("provenance unknown (the record names no code files)")
    elif row["stale"]:
        notes.append(f"stale: {len(row['stale'])} changed since: {_shown(row['stale'])}")
    if row["dirty"]:
        notes.append("dirty (ran with uncommitted changes)")
    if row["rerun_state"]:
        notes.append(f"rerun {row['rerun_state']} ({row['rerun']})")
    return "  " + "; ".join(notes) if notes else ""


def print_status(sweep: dict, scale: str) -> None:
    """One line per cell (its state; a done one's code notes; the log of a failed one), then
    the counts, with the stale, dirty and unknown-provenance records among the done."""
    rows = status(sweep, scale)
    for r in rows:
        cell = " ".join([r["task"], r["optim"], f"seed={r['seed']}", *r["overrides"]])
        extra = f"  log: {r['log']}" if r["state"] == "failed" and r["log"] else ""
        print(f"{r['state']:14s} {cell}{code_note(r)}{extra}")
    counts = {s: sum(r["state"] == s for r in rows) for s in sorted({r["state"] for r in rows})}
    done = [r for r in rows if r["state"] == "done"]
    kinds = {"stale": sum(bool(r["stale"]) for r in done),
             "dirty": sum(r["dirty"] for r in done),
             "of unknown provenance": sum(r["stale"] is None for r in done)}
    among = ", ".join(f"{v} {k}" for k, v in kinds.items() if v)
    print(f"{len(rows)} cells: " + ", ".join(f"{v} {k}" for k, v in counts.items())
          + (f" (of the done: {among})" if among else ""))
