"""The records and paper numbers every table reads: records indexed by cell, crash notes apart,
scales in order, the papers' CSVs, and which optimizers a paper table lists."""

import csv
from pathlib import Path

from experiments.optimizers import OPTIMIZERS

SCALE_ORDER = ("smoke", "small", "paper")
# The scale the commands use when no records exist at all: what `make run` runs.
DEFAULT_SCALE = "small"


def index_records(records, variant=None):
    """{(scale, task, optim): [records sorted by seed]} of the records of ``variant`` (None:
    the table cells, runs without extra overrides)."""
    cells = {}
    for rec in records:
        if (rec.get("variant") or None) == variant:
            cells.setdefault((rec["scale"], rec["task"], rec["optim"]), []).append(rec)
    for recs in cells.values():
        recs.sort(key=lambda r: r["seed"])
    return cells


def split_crash_notes(records):
    """(records, crash notes): a crash note is what a run whose loss became NaN/inf left."""
    notes = [r for r in records if "crashed_at_step" in r]
    return [r for r in records if "crashed_at_step" not in r], notes


def scale_key(scale):
    known = scale in SCALE_ORDER
    return (0, SCALE_ORDER.index(scale), "") if known else (1, 0, scale)


def scales_for(cells, tasks, skip=()):
    """Scales with at least one record for `tasks`, ordered smoke < small < paper < others;
    `skip`: scales rendered in a layout of their own."""
    scales = {s for (s, t, _) in cells if t in tasks and s not in skip}
    return sorted(scales, key=scale_key) or [DEFAULT_SCALE]


def load_paper(paper_dir, name):
    """Rows of results/paper/<name>.csv keyed by the row name as the paper prints it."""
    with open(Path(paper_dir) / f"{name}.csv", newline="") as f:
        return {row["optimizer"]: row for row in csv.DictReader(f)}


def optimizer_name(entry):
    """'AdamW', 'AdaBelief', 'AdamW8bit', ...: the class a registry entry builds."""
    cls = entry.optimizer
    return cls.rpartition(".")[2] if isinstance(cls, str) else cls.__name__


def table_rows(spec, paper, cells):
    """(optim, label) per row: the rows the paper has no run for (optim None), the registry's
    entries whose label is a row of the paper's table, then the other entries of the table's
    optimizer family (spec["family"]) with records for its tasks; registry order."""
    tasks = {c["task"] for c in spec["columns"]}
    with_records = {o for (_, t, o) in cells if t in tasks}
    rows = [(None, label) for label in spec.get("no_run", ())]
    rows += [(name, o.label) for name, o in OPTIMIZERS.items() if o.label in paper]
    rows += [(name, o.label) for name, o in OPTIMIZERS.items()
             if o.label not in paper and name in with_records
             and optimizer_name(o).startswith(spec["family"])]
    return rows
