"""Run records: where they lie, the writer, and the one loader every reader uses.

A record is the single source of every table cell (docs/experiments.md, "Records"). It lies at
``<records_dir>/<scale>/<task>/<optim>/seed<k>.json``; runs with extra overrides (ablations) one
level deeper, under their variant name: the layout and the naming rule are
experiments/folders.py's (``cell_path``, ``variant_name``), shared with the run folders. A run
whose loss became NaN/inf leaves a crash note, ``crash-seed<k>.json``, where its record would
be. :func:`validate` (the schema, experiments.record_schema) checks a record when it is
made (:func:`make_record`, :func:`write_record`) and every time it is read
(:func:`load_record`, :func:`load_records`: tables, figures, the e2e table).

Standard library at import time, so that readers need neither torch nor omegaconf.
"""

import json
import os
import secrets
from pathlib import Path

from experiments.folders import cell_path
from experiments.jsonable import plain
from experiments.provenance import provenance
from experiments.record_schema import RecordError, validate

__all__ = ["RecordError", "validate"]  # the schema's, read here by every reader of records

ROOT = Path(__file__).resolve().parents[1]


def relative_path(record: dict, *, crash_note: bool = False) -> Path:
    """Where ``record`` (or crash note) lies below the records folder, from its fields
    (:func:`experiments.folders.cell_path`): the path is the index of the tables."""
    cell = cell_path(record["scale"], record["task"], record["optim"], record.get("variant"),
                     record["seed"])
    return cell.with_name(f"{'crash-' if crash_note else ''}{cell.name}.json")


# ----------------------------------------------------------------------------- reading


def load_record(path, root=None) -> dict:
    """The record (or crash note, by its ``crash-`` file name) at ``path``, validated; with
    ``root``, also checked to lie where its fields say. Raises RecordError naming the file."""
    path = Path(path)
    crash_note = path.name.startswith("crash-")
    try:
        record = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise RecordError(f"{path}: not valid JSON ({e})") from None
    except OSError as e:
        raise RecordError(f"{path}: cannot be read ({e.strerror})") from None
    try:
        validate(record, crash_note=crash_note)
    except RecordError as e:
        raise RecordError(f"{path}: {e}") from None
    if root is not None:
        expected = relative_path(record, crash_note=crash_note)
        actual = path.relative_to(root)
        if actual != expected:
            raise RecordError(f"{path}: record says {expected} but lies at {actual}")
    return record


def load_records(root, *, variants: bool = False, crash_notes: bool = False) -> list[dict]:
    """Every record under ``root``, sorted by path: the table cells
    (``<scale>/<task>/<optim>/seed<k>.json``); with ``variants``, also runs with extra overrides
    (one folder deeper); with ``crash_notes``, also the crash notes. A bad file raises
    RecordError naming it."""
    root = Path(root)
    if not root.is_dir():
        return []
    names = ["seed*.json"] + (["crash-seed*.json"] if crash_notes else [])
    depths = ["*/*/*/"] + (["*/*/*/*/"] if variants else [])
    paths = sorted({p for d in depths for n in names for p in root.glob(d + n)})
    return [load_record(p, root) for p in paths]


# ----------------------------------------------------------------------------- writing


def write_json_atomic(path: Path, obj) -> None:
    """Write to a temporary file in the same folder, then rename: readers never see a torn file,
    and concurrent writers of different records never touch each other's files. The file gets
    the permissions of any new file (0644 under the usual umask 022): clusters share result
    folders, and mkstemp's 0600 would hide records from the rest of a group."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)  # the umask applies
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(plain(obj), f, indent=2, sort_keys=False, default=str)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_record(path: Path, record: dict) -> None:
    """Validate ``record``, then write it atomically to ``path``."""
    try:
        validate(record)
    except RecordError as e:
        raise RecordError(f"{path}: not written, the record is malformed: {e}") from None
    write_json_atomic(path, record)


def record_path(cfg) -> Path:
    """``<records_dir>/<scale>/<task>/<optim>[/<variant>]/seed<k>.json`` of the composed config
    ``cfg``: a run with extra overrides (an ablation) lies one level deeper, under its variant,
    so it never replaces a table cell."""
    return Path(cfg.records_dir) / relative_path({
        "scale": cfg.scale.name, "task": cfg.task.name, "optim": cfg.optim_name,
        "variant": str(cfg.get("variant") or ""), "seed": cfg.seed})


def crash_note_path(cfg) -> Path:
    """Where a diverged run notes its crash: beside the record it will never write."""
    path = record_path(cfg)
    return path.with_name(f"crash-{path.name}")


def make_crash_note(cfg, step: int, loss: float) -> dict:
    """The note a run leaves when its loss became NaN/inf at ``step``, validated."""
    from omegaconf import OmegaConf

    note = {
        "task": cfg.task.name, "optim": cfg.optim_name, "scale": cfg.scale.name,
        "seed": int(cfg.seed), "variant": cfg.get("variant") or None,
        "crashed_at_step": int(step), "loss": str(loss), "provenance": provenance(),
        "config": OmegaConf.to_container(cfg, resolve=True),
    }
    return validate(note, crash_note=True)


def write_crash_note(cfg, step: int, loss: float) -> Path:
    """Note beside the record it will never write that the run's loss became NaN/inf at
    ``step`` (:func:`make_crash_note`); returns the note's path."""
    path = crash_note_path(cfg)
    write_json_atomic(path, make_crash_note(cfg, step, loss))
    return path


def make_record(cfg, metrics: dict, memory: dict, time_: dict, wandb_path=None,
                replica_diff: float | None = None, batch: dict | None = None,
                optimizer: dict | None = None, kernel: str | dict | None = None) -> dict:
    """The run's record, validated (:func:`validate`). ``cfg``: the run's composed config;
    ``replica_diff``: the largest parameter difference between ranks (0.0 when identical);
    ``batch``: the split of the global batch (:data:`BATCH`); ``optimizer``: the values it ran
    with and ``kernel``: the step that ran (experiments.provenance)."""
    from omegaconf import OmegaConf

    prov = provenance(wandb_path)
    prov["world_size"] = int(os.environ.get("WORLD_SIZE", "1"))
    if kernel is not None:
        prov["kernel"] = kernel
    if replica_diff is not None:
        prov["replica_max_diff"] = replica_diff
    record = {
        "task": cfg.task.name,
        "optim": cfg.optim_name,
        "scale": cfg.scale.name,
        "seed": int(cfg.seed),
        "variant": cfg.get("variant") or None,
        "metrics": plain(metrics),
        "memory": plain(memory),
        "time": plain(time_),
        "provenance": prov,
        "config": OmegaConf.to_container(cfg, resolve=True),
    }
    if batch is not None:
        record["batch"] = batch
    if optimizer is not None:
        record["optimizer"] = plain(optimizer)
    try:
        return validate(record)
    except RecordError as e:
        raise RecordError(f"the record of {relative_path(record)} is malformed: {e}") from None


