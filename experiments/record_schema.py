"""The schema of run records and crash notes, and :func:`validate`, which checks one.

experiments.records makes, writes and reads them and validates each one made or read.
Standard library only, so that readers need neither torch nor omegaconf.
"""

import math


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
