"""Run records: their schema, the writer, and the one loader every reader uses.

A record is the single source of every table cell (docs/experiments.md, "Records"). It lies at
``<records_dir>/<scale>/<task>/<optim>/seed<k>.json``; runs with extra overrides (ablations) one
level deeper, under their variant name: the layout and the naming rule are
experiments/folders.py's (``cell_path``, ``variant_name``), shared with the run folders. A run
whose loss became NaN/inf leaves a crash note, ``crash-seed<k>.json``, where its record would
be. :func:`validate` checks a record when it is made (:func:`make_record`,
:func:`write_record`) and every time it is read (:func:`load_record`, :func:`load_records`:
tables, figures, the e2e table).

Standard library at import time, so that readers need neither torch nor omegaconf.
"""

import json
import math
import os
import secrets
from pathlib import Path

from experiments.folders import cell_path
from experiments.jsonable import plain
from experiments.provenance import provenance

ROOT = Path(__file__).resolve().parents[1]


class RecordError(ValueError):
    """A record that cannot be used; read from a file, the message starts with its path."""


# ----------------------------------------------------------------------------- schema
# field: (type, required). A type is str, int, bool, dict, NUMBER (a finite int or float) or a
# tuple of them; None in a tuple allows null. Keys not listed are allowed (newer runs may add
# fields); listed ones must have their type.

NUMBER = "number"

RECORD = {
    "task": (str, True),
    "optim": (str, True),
    "scale": (str, True),
    "seed": (int, True),
    "variant": ((str, None), False),
    "metrics": (dict, True),
    "memory": (dict, True),
    "time": (dict, True),
    "provenance": (dict, True),
    "config": (dict, True),
    "batch": (dict, False),  # how the global batch was split (BATCH)
    # the values the optimizer ran with (experiments.provenance.optimizer_section); records
    # made before it existed lack it
    "optimizer": (dict, False),
}
CRASH_NOTE = {
    **{k: RECORD[k] for k in ("task", "optim", "scale", "seed", "variant", "provenance", "config")},
    "crashed_at_step": (int, True),
    "loss": (str, True),
}
SECTIONS = {
    "memory": {
        "state_bytes": (dict, True),
        "peak_bytes": ((int, None), False),
        "peak_kind": ((str, None), False),
        "n_params": (int, False),
        "params": (int, False),
    },
    "time": {
        "wall_s": (NUMBER, True),
        "train_s": (NUMBER, False),
        "eval_s": (NUMBER, False),
        "steps": (int, False),
        "step_ms_mean": ((NUMBER, None), False),
        "throughput": ((NUMBER, None), False),
        "throughput_unit": (str, False),
    },
    "provenance": {
        "git_sha": ((str, None), True),
        "git_dirty": ((bool, None), False),
        "host": ((str, None), False),
        "cpu": ((str, None), False),
        "gpu": ((str, None), False),
        "world_size": (int, False),
        "replica_max_diff": ((NUMBER, None), False),
        # experiments.provenance; records made before these existed lack them
        "code_hash": (str, False),
        "code_files": (dict, False),
        "dirty_files": ((list, None), False),
        "started_utc": (str, False),
        "kernel": ((str, dict), False),
    },
}
# The global batch of one optimizer step = world x accum x micro items (experiments.batching).
BATCH = {
    "global_batch": (int, True),
    "micro": (int, True),
    "accum": (int, True),
    "world": (int, True),
    "unit": (str, True),
}
# Bytes of optimizer state, each a non-negative int, total = quantized + full_precision.
STATE_BYTES = ("total", "quantized", "full_precision")


def _type_name(typ) -> str:
    if isinstance(typ, tuple):
        return " or ".join("null" if t is None else _type_name(t) for t in typ)
    return typ if typ == NUMBER else {dict: "object", str: "string", int: "integer",
                                      bool: "true/false", list: "list"}[typ]


def _has_type(value, typ) -> bool:
    if isinstance(typ, tuple):
        return any(value is None if t is None else _has_type(value, t) for t in typ)
    if typ == NUMBER:
        return (isinstance(value, (int, float)) and not isinstance(value, bool)
                and math.isfinite(value))
    if typ is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, typ)


def _check_fields(obj: dict, fields: dict, where: str) -> None:
    for key, (typ, required) in fields.items():
        if key not in obj:
            if required:
                raise RecordError(f"missing key {where}{key}")
            continue
        if not _has_type(obj[key], typ):
            raise RecordError(f"{where}{key} must be {_type_name(typ)}, got {obj[key]!r:.60}")


def validate(record, *, crash_note: bool = False) -> dict:
    """Return ``record`` if it is a well-formed run record (or crash note), else raise
    :class:`RecordError` naming the first bad field."""
    if not isinstance(record, dict):
        raise RecordError(f"top level must be a JSON object, got {type(record).__name__}")
    missing = sorted(k for k, (_, req) in (CRASH_NOTE if crash_note else RECORD).items()
                     if req and k not in record)
    if missing:
        raise RecordError(f"missing key(s) {', '.join(missing)}")
    _check_fields(record, CRASH_NOTE if crash_note else RECORD, "")
    if record["seed"] < 0 or not all(record[k] for k in ("task", "optim", "scale")):
        raise RecordError("task, optim and scale must be non-empty and seed >= 0")
    if crash_note:
        return record
    for section, fields in SECTIONS.items():
        _check_fields(record[section], fields, f"{section}.")
    if "batch" in record:
        _check_fields(record["batch"], BATCH, "batch.")
        b = record["batch"]
        if b["global_batch"] != b["world"] * b["accum"] * b["micro"]:
            raise RecordError(f"batch.global_batch ({b['global_batch']}) must equal world x "
                              f"accum x micro ({b['world']} x {b['accum']} x {b['micro']})")
    for name, value in record["metrics"].items():
        if not _has_type(value, (NUMBER, None)):
            raise RecordError(f"metrics.{name} must be a finite number or null, got {value!r:.60}")
    state = record["memory"]["state_bytes"]
    for key in STATE_BYTES:
        if not _has_type(state.get(key), int) or state[key] < 0:
            raise RecordError(f"memory.state_bytes.{key} must be a non-negative integer, "
                              f"got {state.get(key)!r}")
    if state["total"] != state["quantized"] + state["full_precision"]:
        raise RecordError(f"memory.state_bytes.total ({state['total']}) must equal quantized + "
                          f"full_precision ({state['quantized']} + {state['full_precision']})")
    return record


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


