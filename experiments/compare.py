"""Did this run reproduce? The short block a finished run prints (rank 0, after its record).

For the task's main metric (``main_metric`` in conf/task/<task>.yaml) the block shows:

* this run's value;
* the committed record of the same cell, ``results/runs/<scale>/<task>/<optim>[/<variant>]/
  seed<k>.json``: its value, the commit it ran at and whether that tree was dirty, or "no
  committed record". A run that wrote its own record there (``records_dir=results/runs``) has
  replaced that file: the committed version is then read from git HEAD, and the block says how
  to restore it;
* the committed cell's seeds, mean ± sample std (n), when it has several;
* the paper's number for the column (results/paper, found through the tables' own mapping,
  scripts/table_layouts.TABLES, and the optimizer's row label): a number at the paper's scale,
  comparable in value with ``scale=paper`` runs only.

Nothing here may fail a finished run: a missing git, results/paper or committed record is a
line of the block, and anything else that goes wrong a warning (:func:`print_report`).
"""

import csv
import json
import logging
from pathlib import Path

from experiments import provenance, records

log = logging.getLogger(__name__)
ROOT = Path(__file__).resolve().parents[1]
RUNS, PAPER = Path("results", "runs"), Path("results", "paper")
RULE = "-" * 78
_PROBE = object()


def _layouts():
    """scripts/table_layouts (the paper tables' columns) and table_render (number formats)."""
    from scripts import table_layouts, table_render

    return table_layouts, table_render


def paper_column(task: str, metric: str) -> list[tuple[dict, dict]]:
    """(table spec, column) of every paper-table column that shows ``metric`` of ``task``."""
    probe = {"metrics": {metric: _PROBE}}  # a column shows the metric whose value it reads
    found = []
    for spec in _layouts()[0].TABLES:
        for col in spec["columns"]:
            try:
                shows = col["task"] == task and col["get"](probe) is _PROBE
            except (KeyError, TypeError):  # a column of memory or time
                shows = False
            if shows:
                found.append((spec, col))
    return found


def paper_number(task: str, optim: str, metric: str, root: Path) -> tuple[str, str] | None:
    """(the paper's printed value, where it is printed) for this cell's column, or None when
    no paper table has one; the row is the optimizer's label, as in make_tables."""
    from experiments.optimizers import OPTIMIZERS

    label = getattr(OPTIMIZERS.get(optim), "label", None)
    for spec, col in paper_column(task, metric):
        with open(root / PAPER / f"{spec['paper_csv']}.csv", newline="") as f:
            rows = {row["optimizer"]: row for row in csv.DictReader(f)}
        value = rows.get(label, {}).get(col["paper"])
        if value:
            table = spec["title"].split(":")[0]
            return value, f"{table}, column {col['header']!r}, row {label!r}"
    return None


def decimals(task: str, metric: str) -> int:
    """The decimals the tables print this metric with (4 when no table shows it)."""
    columns = paper_column(task, metric)
    return columns[0][1]["decimals"] if columns else 4


def _load(text: str | None) -> dict | None:
    if text is None:
        return None
    try:
        return records.validate(json.loads(text))
    except (ValueError, records.RecordError):
        return None


def committed_cell(rel: Path, root: Path, replaced: bool) -> dict[str, dict]:
    """{file name: record} of the committed cell folder of ``rel`` (a record's relative path):
    from git HEAD when this run ``replaced`` its record there, else from the files."""
    folder = root / RUNS / rel.parent
    if not replaced:
        found = {p.name: _load(p.read_text()) for p in sorted(folder.glob("seed*.json"))}
        return {k: v for k, v in found.items() if v is not None}
    names = provenance.git("ls-tree", "--name-only", "HEAD", f"{RUNS / rel.parent}/", root=root)
    found = {Path(n).name: _load(provenance.git("show", f"HEAD:{n}", root=root))
             for n in (names or "").splitlines() if Path(n).name.startswith("seed")}
    return {k: v for k, v in found.items() if v is not None}


def _value(record: dict | None, metric: str):
    value = (record or {}).get("metrics", {}).get(metric)
    return value if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _origin(record: dict) -> str:
    prov = record["provenance"]
    sha = (prov.get("git_sha") or "unknown")[:7]
    dirty = {True: "dirty", False: "clean"}.get(prov.get("git_dirty"), "dirty: unknown")
    return f"commit {sha}, {dirty}"


def report(record: dict, path, root: Path | None = None) -> str:
    """The block for ``record``, just written at ``path``; ``root``: the checkout whose
    results/runs, results/paper and git are read (default: this one)."""
    root = Path(root or ROOT)
    task, optim, scale = record["task"], record["optim"], record["scale"]
    metric = record["config"].get("task", {}).get("main_metric")
    rel = records.relative_path(record)
    head = f"reproduction check: {rel.with_suffix('')}"
    if not metric:
        return "\n".join([RULE, head, f"no main_metric in conf/task/{task}.yaml", RULE])
    _, render = _layouts()
    places = decimals(task, metric)

    def fmt(value):
        return "—" if value is None else render.fmt_num(value, places)

    ours = _value(record, metric)
    lines = [RULE, f"{head} (main metric: {metric})",
             f"this run         {fmt(ours)}   record {path}"]
    committed = root / RUNS / rel
    try:
        replaced = Path(path).resolve() == committed.resolve()
    except OSError:
        replaced = False
    cell = committed_cell(rel, root, replaced)
    theirs = cell.get(rel.name)
    where = f"git HEAD:{RUNS / rel}" if replaced else str(RUNS / rel)
    if theirs is None:
        why = (" (git HEAD has none, or git cannot be read)" if replaced
               else " for this cell and seed")
        lines.append(f"committed        no committed record{why}")
    else:
        mine = _value(theirs, metric)
        diff = ("" if None in (ours, mine)
                else f"; this run - committed = {render.fmt_signed(ours - mine, places)}")
        lines.append(f"committed        {fmt(mine)}   {where} ({_origin(theirs)}){diff}")
    seeds = [v for v in (_value(r, metric) for r in cell.values()) if v is not None]
    if len(seeds) > 1:
        lines.append(f"committed seeds  {render.fmt_mean_std(seeds, places)} (mean ± std, "
                     f"n={len(seeds)})")
    if replaced and theirs is not None:
        lines.append(f"NOTE: this run replaced the committed record {RUNS / rel}; restore it "
                     f"with `git checkout -- {RUNS / rel}`")
    try:
        paper = paper_number(task, optim, metric, root)
    except OSError as err:
        lines.append(f"paper            — (cannot read {PAPER}: {err.strerror or err})")
    else:
        if paper is None:
            lines.append(f"paper            — (no paper table has {task} {metric} for {optim})")
        else:
            note = ("the paper's number, comparable in value" if scale == "paper" else
                    "the paper's number, at the paper's scale: not comparable in value with "
                    f"scale={scale}")
            if record.get("variant"):
                note += f"; the paper ran {optim} without {record['variant']}"
            lines += [f"paper            {paper[0]}   {paper[1]}", f"{'':17s}({note})"]
    return "\n".join(lines + [RULE])


def print_report(record: dict, path) -> None:
    """Print :func:`report` to stdout; any failure is a warning, never the run's end."""
    try:
        text = report(record, path)
    except Exception as err:  # the run is finished and its record written: never fail it here
        log.warning("reproduction check skipped (%s: %s)", type(err).__name__, err)
        return
    print(text, flush=True)
