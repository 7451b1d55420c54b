#!/usr/bin/env python
"""Turn run records into tables shaped like the papers' Table 1, Table 2a and a memory table.

    python scripts/make_tables.py [--records results/runs] [--paper results/paper] \\
                                  [--out results/tables]     # paths relative to the cwd

Every cell shows the paper's value beside ours (mean ± std over seeds, n, scale, hardware);
a cell with no records shows the exact `run.py` command that fills it. The output is
deterministic (sorted, fixed float formats, no timestamps) so it can be golden-tested.

Rows and their labels come from the optimizer registry (solo.presets and the peers of
experiments/optimizers.py): a table lists the presets whose label is a row of the paper's
table, in registry order, then any other entry of the table's optimizer family with records
for its tasks. Records are read through experiments/records.py, which validates each one.
Table layouts are data here (TABLES, MEMORY_COLUMNS, and the layouts of the benchmark tables
that scripts/memory_table.py and scripts/e2e_table.py render with md_columns). Imports torch
(through the registry) but neither hydra nor omegaconf.
"""

import argparse
import csv
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # experiments/, solo/
from experiments.optimizers import OPTIMIZERS  # noqa: E402
from experiments.records import RecordError, load_records  # noqa: E402

SCALE_ORDER = ("smoke", "small", "paper")
# The scale the commands use when no records exist at all: what `make run` runs.
DEFAULT_SCALE = "small"

# Where a record may say how many parameters the model has (for bytes/param).
PARAM_COUNT_KEYS = ("n_params", "num_params", "params")

GIB = 2**30
BYTE_UNITS = ((GIB, "GB"), (2**20, "MB"), (2**10, "KB"), (1, "B"))
DURATION_UNITS = ((3600, "h"), (60, "min"), (1, "s"))

PROVENANCE_LINE = (
    "Paper values are the papers' numbers as printed; ours come from records in {records}."
)
LEGEND = (
    "Ours: mean ± sample std over seeds (n seeds, scale, hardware), Δ = ours - paper (paper scale only). "
    "Only scale=paper is comparable with the paper; smoke and small are sanity runs. "
    "A cell without records shows the command that fills it."
)


# ----------------------------------------------------------------------------- records


def index_records(records):
    """{(scale, task, optim): [records sorted by seed]}."""
    cells = {}
    for rec in records:
        cells.setdefault((rec["scale"], rec["task"], rec["optim"]), []).append(rec)
    for recs in cells.values():
        recs.sort(key=lambda r: r["seed"])
    return cells


def scale_key(scale):
    known = scale in SCALE_ORDER
    return (0, SCALE_ORDER.index(scale), "") if known else (1, 0, scale)


def scales_for(cells, tasks):
    """Scales with at least one record for `tasks`, ordered smoke < small < paper < others."""
    scales = {s for (s, t, _) in cells if t in tasks}
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


# ----------------------------------------------------------------------------- formatting


def hardware_label(rec):
    """Short hardware name: the GPU model (e.g. H100) if a GPU was used, else cpu."""
    gpu = rec["provenance"].get("gpu")
    if not gpu:
        return "cpu"
    words = str(gpu).replace("NVIDIA", "").split()
    for w in words:  # model numbers look like A100, H100, V100, L40S
        if w[:1].isalpha() and any(c.isdigit() for c in w) and not w.endswith("GB"):
            return w
    return words[-1] if words else "gpu"


def fmt_num(x, decimals):
    return f"{x + 0.0:.{decimals}f}".replace("-0." + "0" * decimals, "0." + "0" * decimals)


def pick_unit(x, units):
    for factor, name in units:
        if abs(x) >= factor:
            return factor, name
    return units[-1]


def mean_std(values):
    mean = statistics.fmean(values)
    std = statistics.stdev(values) if len(values) > 1 else None
    return mean, std


def fmt_mean_std(values, decimals=2, units=None, hide_zero_std=False):
    """'97.10 ± 0.21', or '97.10' for one value; with units, scaled to the mean's unit."""
    mean, std = mean_std(values)
    factor, unit = pick_unit(mean, units) if units else (1, "")
    if unit == "B":  # whole bytes: decimals would only suggest precision that is not there
        decimals = 0
    text = fmt_num(mean / factor, decimals)
    if std is not None and not (hide_zero_std and std == 0):
        text += f" ± {fmt_num(std / factor, decimals)}"
    return f"{text} {unit}" if unit else text


SAME_RUN = "″ (same run)"


def command(task, optim, scale):
    return f"`python run.py task={task} optim={optim} scale={scale} seed=0`"


def ours_cell(recs, get, decimals, paper=None, units=None):
    """Our value for one cell from its records, or None when no record has the value."""
    values = [v for v in (get(r) for r in recs) if v is not None]
    if not values:
        return None
    hw = "+".join(sorted({hardware_label(r) for r in recs}))
    text = f"{fmt_mean_std(values, decimals, units)} (n={len(values)}, {recs[0]['scale']}, {hw})"
    if paper is not None and recs[0]["scale"] == "paper":  # other scales are not comparable
        delta = statistics.fmean(values) - paper
        text += f" Δ {'+' if delta >= 0 else '-'}{fmt_num(abs(delta), decimals)}"
    return text


def paper_float(text):
    try:
        return float(text)
    except (TypeError, ValueError):  # "Crash" or blank: nothing to take a difference with
        return None


# ----------------------------------------------------------------------------- table specs
# A column: header, task, paper CSV column, how to read our value from a record, decimals,
# and optionally units (ours then scaled to a unit) and the paper unit suffix.


def metric(name):
    return lambda rec: rec["metrics"].get(name)


def state_bytes(rec):
    return rec["memory"]["state_bytes"]["total"]


def wall_s(rec):
    return rec["time"].get("wall_s")


TABLE1 = {
    "name": "table1",
    "title": "Table 1 (SOLO, arXiv 2505.00347): training from scratch",
    "paper_csv": "solo_table1",
    "family": "AdamW",
    "columns": [
        dict(header="Swin-T ACC@1", task="swin", paper="swin_top1", get=metric("top1"), decimals=2),
        dict(header="Swin-T ACC@5", task="swin", paper="swin_top5", get=metric("top5"), decimals=2),
        dict(
            header="Transformer-B BLEU",
            task="transformer",
            paper="transformer_bleu",
            get=metric("bleu"),
            decimals=2,
        ),
        dict(header="DCN AUC", task="dcn", paper="dcn_auc", get=metric("auc"), decimals=2),
        dict(
            header="DCN LogLoss", task="dcn", paper="dcn_logloss", get=metric("logloss"), decimals=5
        ),
    ],
}

LLAMA_COLUMNS = [
    dict(header="MMLU", task="llama", paper="mmlu", get=metric("mmlu"), decimals=2),
    dict(header="ARC-e", task="llama", paper="arc_e", get=metric("arc_e"), decimals=2),
    dict(header="ARC-c", task="llama", paper="arc_c", get=metric("arc_c"), decimals=2),
    dict(header="OBQA", task="llama", paper="obqa", get=metric("obqa"), decimals=2),
    dict(header="SIQA", task="llama", paper="siqa", get=metric("siqa"), decimals=2),
]

TABLE2A = {
    "name": "table2a",
    "title": "Table 2a (SOLO, arXiv 2505.00347): LLaMA instruction tuning, state memory, time",
    "paper_csv": "solo_table2a",
    "family": "AdamW",
    "columns": LLAMA_COLUMNS
    + [
        # GB = 2^30 bytes; paper units are GB and hours, ours scale to whatever unit fits.
        dict(
            header="State memory",
            task="llama",
            paper="state_memory_gb",
            get=state_bytes,
            decimals=2,
            units=BYTE_UNITS,
            paper_unit="GB",
        ),
        dict(
            header="Time",
            task="llama",
            paper="time_h",
            get=wall_s,
            decimals=1,
            units=DURATION_UNITS,
            paper_unit="h",
        ),
    ],
    # The paper has no run behind the pretrained row: it is the model before fine-tuning.
    "no_run": ["pretrained"],
}

TABLE_ADABELIEF = {
    "name": "table2a_adabelief",
    "title": "AdaBelief on LLaMA-7B (SOLO, arXiv 2505.00347)",
    "paper_csv": "solo_adabelief",
    "family": "AdaBelief",
    "columns": LLAMA_COLUMNS,
}


def build_rows(spec, paper, cells, scale):
    """Table body: one row per optimizer; per column a (paper, ours) pair of strings."""
    rows = []
    for optim, label in table_rows(spec, paper, cells):
        prow = paper.get(label, {})
        pairs = []
        commanded = set()  # one missing run fills every column of its task: say it once
        for col in spec["columns"]:
            ptext = prow.get(col["paper"], "") or "—"
            if ptext != "—" and col.get("paper_unit"):
                ptext = f"{ptext} {col['paper_unit']}"
            recs = cells.get((scale, col["task"], optim), [])
            # Δ only where ours and the paper share a unit and the paper printed a number
            ref = None if col.get("units") else paper_float(prow.get(col["paper"]))
            ours = ours_cell(recs, col["get"], col["decimals"], ref, col.get("units"))
            if optim is None:
                ours = "—"
            elif ours is None and recs:
                ours = "no value in records"
            elif ours is None and col["task"] in commanded:
                ours = SAME_RUN
            elif ours is None:
                ours = command(col["task"], optim, scale)
                commanded.add(col["task"])
            pairs.append((ptext, ours))
        shown = "—" if optim is None else f"`{optim}`"
        rows.append((label, shown, pairs))
    return rows


# ----------------------------------------------------------------------------- markdown


def md_table(header, rows):
    """The one markdown renderer: a header and rows of cell strings."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def md_columns(layout, rows, **fill):
    """A table from a layout, [(header, cell function of a row)], and rows; headers are
    str.format templates filled from ``fill``."""
    return md_table([h.format(**fill) for h, _ in layout], [[cell(r) for _, cell in layout]
                                                           for r in rows])


def md_sections(spec, paper, cells, level):
    """A section per scale with records (or the default scale), paper and ours side by side."""
    out = []
    for scale in scales_for(cells, {c["task"] for c in spec["columns"]}):
        header = ["optimizer", "optim"]
        for col in spec["columns"]:
            header += [f"{col['header']} (paper)", f"{col['header']} (ours)"]
        body = [
            [label, optim] + [x for pair in pairs for x in pair]
            for label, optim, pairs in build_rows(spec, paper, cells, scale)
        ]
        out += [f"{level} scale: {scale}", "", md_table(header, body), ""]
    return out


def render_md(spec, paper, cells, records_label, extra=()):
    """One markdown document; `extra` holds (spec, paper) of companion tables appended below."""
    out = [f"# {spec['title']}", "", PROVENANCE_LINE.format(records=records_label), "", LEGEND, ""]
    out += md_sections(spec, paper, cells, "##")
    for sub, sub_paper in extra:
        out += [f"## {sub['title']}", ""] + md_sections(sub, sub_paper, cells, "###")
    return "\n".join(out).rstrip("\n") + "\n"


# ----------------------------------------------------------------------------- LaTeX


def tex_escape(text):
    for a, b in (
        ("\\", r"\textbackslash{}"),
        ("&", r"\&"),
        ("%", r"\%"),
        ("#", r"\#"),
        ("_", r"\_"),
        ("±", r"$\pm$"),
        ("Δ", r"$\Delta$"),
        ("—", "--"),
    ):
        text = text.replace(a, b)
    return text


def tex_ours(text):
    """LaTeX cells keep the number and n; commands do not fit a paper table, so '--'."""
    if text.startswith("`") or text in ("—", "no value in records", SAME_RUN):
        return "--"
    value, _, rest = text.partition(" (n=")
    n = rest.split(",", 1)[0]
    return f"{tex_escape(value)}\\,$^{{n={n}}}$"


def render_tex(spec, paper, cells, records_label):
    tasks = {c["task"] for c in spec["columns"]}
    ncol = len(spec["columns"])
    out = [
        f"% {spec['title']}",
        "% " + PROVENANCE_LINE.format(records=records_label),
        "% Generated by scripts/make_tables.py; ours = mean $\\pm$ std over n seeds.",
        "% Needs \\usepackage{booktabs}.",
    ]
    for scale in scales_for(cells, tasks):
        rows = build_rows(spec, paper, cells, scale)
        hw = sorted(
            {
                hardware_label(r)
                for (s, t, _), recs in cells.items()
                if s == scale and t in tasks
                for r in recs
            }
        ) or ["none"]
        out += [
            "\\begin{table}[t]",
            "\\centering",
            f"\\caption{{{tex_escape(spec['title'])}; ours at scale {scale} "
            f"({tex_escape(', '.join(hw))}).}}",
            f"\\label{{tab:{spec['name']}-{scale}}}",
            "\\begin{tabular}{l" + "cc" * ncol + "}",
            "\\toprule",
            " & ".join(
                ["optimizer"]
                + [f"\\multicolumn{{2}}{{c}}{{{tex_escape(c['header'])}}}" for c in spec["columns"]]
            )
            + " \\\\",
            " & ".join([""] + ["paper & ours"] * ncol) + " \\\\",
            "\\midrule",
        ]
        for label, _, pairs in rows:
            cells_tex = [x for p, o in pairs for x in (tex_escape(p), tex_ours(o))]
            out.append(" & ".join([tex_escape(label)] + cells_tex) + " \\\\")
        out += ["\\bottomrule", "\\end{tabular}", "\\end{table}", ""]
    return "\n".join(out).rstrip("\n") + "\n"


# ----------------------------------------------------------------------------- memory


def param_count(rec):
    for key in PARAM_COUNT_KEYS:
        if isinstance(rec["memory"].get(key), int):
            return rec["memory"][key]
    return None


def _if_records(cell):
    """A memory-table cell that is blank in a row without records."""
    return lambda row: cell(row, row["recs"]) if row["recs"] else ""


def _state_bytes(name):
    def cell(row):
        if not row["recs"]:  # the first value column of a row without records: how to fill it
            return command(row["task"], row["optim"], row["scale"]) if name == "total" else ""
        vals = [r["memory"]["state_bytes"][name] for r in row["recs"]]
        return fmt_mean_std(vals, 2, BYTE_UNITS, hide_zero_std=True)

    return cell


def _bytes_per_param(row, recs):
    per_param = [r["memory"]["state_bytes"]["total"] / param_count(r) for r in recs
                 if param_count(r)]
    return fmt_mean_std(per_param, 3, hide_zero_std=True) if per_param else "—"


def _peak(row, recs):
    peaks = [r["memory"]["peak_bytes"] for r in recs if r["memory"].get("peak_bytes") is not None]
    kinds = sorted({str(r["memory"].get("peak_kind", "?")) for r in recs})
    if not peaks:
        return "—"
    return f"{fmt_mean_std(peaks, 2, BYTE_UNITS, hide_zero_std=True)} ({'/'.join(kinds)})"


# One row per (task, optimizer): {task, optim, scale, recs, paper_gb}.
MEMORY_COLUMNS = [
    ("task", lambda row: row["task"]),
    ("optim", lambda row: f"`{row['optim']}`"),
    ("state total", _state_bytes("total")),
    ("quantized", _state_bytes("quantized")),
    ("full precision", _state_bytes("full_precision")),
    ("bytes/param", _if_records(_bytes_per_param)),
    ("peak memory", _if_records(_peak)),
    ("n", lambda row: f"{len(row['recs'])} ({'+'.join(sorted({hardware_label(r) for r in row['recs']}))})"
     if row["recs"] else "0"),
    ("paper (LLaMA-7B)", lambda row: f"{row['paper_gb']} GB" if row["paper_gb"] else "—"),
]


def render_memory(papers, cells, records_label):
    """Optimizer-state memory per task and optimizer, from records (GB = 2^30 bytes)."""
    out = [
        "# Optimizer-state memory per task and optimizer",
        "",
        PROVENANCE_LINE.format(records=records_label),
        "",
        "State bytes as counted by the runs (quantized codes and scales vs full-precision "
        "tensors); GB/MB/KB are powers of 2. Mean ± sample std over seeds where they differ. "
        "The paper column is SOLO Table 2a (LLaMA-7B) and applies to the llama rows only. "
        "A row without records shows the command that fills it.",
        "",
    ]
    # The grid: every (task, optimizer) cell of the paper tables, and any other with records.
    grid = {(c["task"], o) for spec in TABLES for c in spec["columns"]
            for o, _ in table_rows(spec, papers[spec["paper_csv"]], {}) if o}
    grid |= {(t, o) for (_, t, o) in cells}
    task_order = list(dict.fromkeys(c["task"] for spec in TABLES for c in spec["columns"]))
    optim_order = list(OPTIMIZERS)
    paper2a = papers[TABLE2A["paper_csv"]]

    def order(item):
        t, o = item
        return (
            task_order.index(t) if t in task_order else len(task_order),
            t,
            optim_order.index(o) if o in optim_order else len(optim_order),
            o,
        )

    for scale in scales_for(cells, {t for t, _ in grid}):
        rows = []
        for task, optim in sorted(grid, key=order):
            label = OPTIMIZERS[optim].label if optim in OPTIMIZERS else None
            paper_gb = paper2a.get(label, {}).get("state_memory_gb", "") if task == "llama" else ""
            rows.append(dict(task=task, optim=optim, scale=scale, paper_gb=paper_gb,
                             recs=cells.get((scale, task, optim), [])))
        out += [f"## scale: {scale}", "", md_columns(MEMORY_COLUMNS, rows), ""]
    return "\n".join(out).rstrip("\n") + "\n"


# ----------------------------------------------------------------------------- benchmark tables
# Layouts of the tables of scripts/memory_table.py and scripts/e2e_table.py, which compute the
# rows (dicts) and render them here. Headers may hold {placeholders} filled by md_columns.

# One row per preset: {preset, n_params, bytes, paper_gb (as printed, "" if none)}.
LLAMA7B_MEMORY_COLUMNS = [
    ("preset", lambda r: r["preset"]),
    ("bits/param (m+v)", lambda r: f"{8 * r['bytes'] / r['n_params']:.3f}"),
    ("bytes", lambda r: f"{r['bytes']:,}"),
    ("ours GB", lambda r: f"{r['bytes'] / GIB:.2f}"),
    ("paper GB", lambda r: r["paper_gb"] or "—"),
    ("ours - paper", lambda r: f"{r['bytes'] / GIB - float(r['paper_gb']):+.2f}"
     if r["paper_gb"] else ""),
]

# One row per (task, optimizer): {task, optim, runs: [{train_s, step_ms_mean, wall_s}, ...],
# train_s_mean, ratio_train}; {baseline} is the optimizer the ratio divides by.
E2E_COLUMNS = [
    ("task", lambda r: r["task"]),
    ("optimizer", lambda r: r["optim"]),
    ("runs", lambda r: str(len(r["runs"]))),
    ("train s (each run)", lambda r: ", ".join(f"{x['train_s']:.0f}" for x in r["runs"])),
    ("mean train s", lambda r: f"{r['train_s_mean']:.0f}"),
    ("x {baseline}", lambda r: f"{r['ratio_train']:.3f}"),
    ("optimizer step ms", lambda r: f"{statistics.mean(x['step_ms_mean'] for x in r['runs']):.2f}"),
    ("wall s", lambda r: f"{statistics.mean(x['wall_s'] for x in r['runs']):.0f}"),
]


# ----------------------------------------------------------------------------- main


TABLES = [TABLE1, TABLE2A, TABLE_ADABELIEF]


def make_tables(records_dir, paper_dir, out_dir, records_label=None):
    """Write all tables; return {file name: text}. Raises RecordError on a bad record."""
    records_label = records_label or str(records_dir)
    cells = index_records(load_records(records_dir))
    papers = {spec["paper_csv"]: load_paper(paper_dir, spec["paper_csv"]) for spec in TABLES}
    p1, p2a = papers[TABLE1["paper_csv"]], papers[TABLE2A["paper_csv"]]
    adabelief = (TABLE_ADABELIEF, papers[TABLE_ADABELIEF["paper_csv"]])
    texts = {
        "table1.md": render_md(TABLE1, p1, cells, records_label),
        "table1.tex": render_tex(TABLE1, p1, cells, records_label),
        "table2a.md": render_md(TABLE2A, p2a, cells, records_label, extra=[adabelief]),
        "table2a.tex": render_tex(TABLE2A, p2a, cells, records_label),
        "memory.md": render_memory(papers, cells, records_label),
    }
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, text in texts.items():
        (out_dir / name).write_text(text)
    return texts


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", default="results/runs", help="run records root")
    parser.add_argument("--paper", default="results/paper", help="the papers' numbers (CSV)")
    parser.add_argument("--out", default="results/tables", help="where the tables go")
    args = parser.parse_args(argv)
    try:
        texts = make_tables(args.records, args.paper, args.out)
    except RecordError as e:
        print(f"make_tables: bad record: {e}", file=sys.stderr)
        return 2
    for name in texts:
        print(Path(args.out) / name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
