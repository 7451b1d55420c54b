#!/usr/bin/env python
"""Turn run records into tables shaped like the papers' Table 1, Table 2a, a memory table, and
claims.md: which of the paper's claims our runs reproduce.

    python scripts/make_tables.py [--records results/runs] [--paper results/paper] \\
                                  [--out results/tables]     # paths relative to the cwd

Every cell shows the paper's value beside ours (mean ± std over seeds, n, scale, hardware);
a cell with no records shows the exact `run.py` command that fills it. The output is
deterministic (sorted, fixed float formats, no timestamps) so it can be golden-tested.
The medium scale (SmolLM2-135M fine-tuning) is another model than the paper's LLaMA-7B: it gets a
section of its own in table2a.md, with the pretrained model (a zero-epoch variant run) as a row.

Rows and their labels come from the optimizer registry (solo.presets and the peers of
experiments/optimizers.py): a table lists the presets whose label is a row of the paper's
table, in registry order, then any other entry of the table's optimizer family with records
for its tasks. Records are read through experiments/records.py, which validates each one.
Table layouts are data in scripts/table_layouts.py (also those of scripts/memory_table.py and
scripts/e2e_table.py); scripts/table_render.py formats cells and renders markdown for all of
them. Imports torch (through the registry) but neither hydra nor omegaconf.
"""

import argparse
import csv
import functools
import statistics
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent)]  # table_*.py; experiments/ and solo/
from table_layouts import (  # noqa: E402
    CLAIM_BASELINE,
    CLAIM_BASELINES,
    CLAIM_COLUMNS,
    CLAIMS,
    MEDIUM_LLAMA,
    MEMORY_COLUMNS,
    SCALE_TASKS,
    TABLE1,
    TABLE2A,
    TABLE_ADABELIEF,
    TABLES,
    param_count,
)
from table_render import (  # noqa: E402
    SAME_RUN,
    command,
    fmt_mean_std,
    fmt_num,
    fmt_signed,
    hardware_label,
    md_columns,
    md_table,
    mean_std,
    tex_escape,
)

from experiments.optimizers import OPTIMIZERS  # noqa: E402
from experiments.records import RecordError, load_records  # noqa: E402

SCALE_ORDER = ("smoke", "small", "paper")
# The scale the commands use when no records exist at all: what `make run` runs.
DEFAULT_SCALE = "small"

PROVENANCE_LINE = (
    "Paper values are the papers' numbers as printed; ours come from records in {records}."
)
LEGEND = (
    "Ours: mean ± sample std over seeds (n seeds, scale, hardware), Δ = ours - paper (paper scale only). "
    "Only scale=paper is comparable with the paper; smoke and small are sanity runs. "
    "A cell without records shows the command that fills it."
)


# ----------------------------------------------------------------------------- records


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


# ----------------------------------------------------------------------------- paper tables


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


def md_sections(spec, paper, cells, level):
    """A section per scale with records (or the default scale), paper and ours side by side."""
    out = []
    tasks = {c["task"] for c in spec["columns"]}
    for scale in scales_for(cells, tasks, spec.get("own_layout_scales", ())):
        header = ["optimizer", "optim"]
        for col in spec["columns"]:
            header += [f"{col['header']} (paper)", f"{col['header']} (ours)"]
        body = [
            [label, optim] + [x for pair in pairs for x in pair]
            for label, optim, pairs in build_rows(spec, paper, cells, scale)
        ]
        out += [f"{level} scale: {scale}", "", md_table(header, body), ""]
    return out


def render_md(spec, paper, cells, records_label, extra=(), after=()):
    """One markdown document; `extra` holds (spec, paper) of companion tables appended below,
    `after` lines of sections in other layouts, appended last."""
    out = [f"# {spec['title']}", "", PROVENANCE_LINE.format(records=records_label), "", LEGEND, ""]
    out += md_sections(spec, paper, cells, "##")
    for sub, sub_paper in extra:
        out += [f"## {sub['title']}", ""] + md_sections(sub, sub_paper, cells, "###")
    out += after
    return "\n".join(out).rstrip("\n") + "\n"


# ----------------------------------------------------------------------------- medium llama


def distinct(values):
    """The values the records agree on, or all of them joined by '/'; '—' when none says."""
    return "/".join(sorted({str(v) for v in values if v is not None})) or "—"


def medium_facts(pretrained, finetuned):
    """What the header of the medium section says, read from the records themselves."""
    recs = pretrained + finetuned
    scale_cfg = [r["config"].get("scale") or {} for r in recs]
    model = [Path(c["pretrained"]).name for c in scale_cfg if c.get("pretrained")]
    hardware = [f"{hardware_label(r)} ({r['provenance'].get('cpu') or '?'})" for r in recs]
    return dict(
        model=distinct(model),
        n_train=distinct(c.get("n_train") for c in scale_cfg),
        steps=distinct(r["time"].get("steps") for r in finetuned),
        batch_size=distinct(c.get("batch_size") for c in scale_cfg),
        hardware=distinct(hardware),
        mmlu_n=distinct(r["metrics"].get("mmlu_n") for r in recs),
        chance=distinct(r["metrics"].get("heldout_chance") for r in recs),
    )


def params_text(recs):
    """'134.5M params': the parameter count the records give (for a header)."""
    counts = sorted({param_count(r) for r in recs} - {None})
    if not counts:
        return "all params"
    return "/".join(f"{c / 1e6:.1f}M" for c in counts) + " params"


def medium_rows(papers, cells, pretrained_cells):
    """The pretrained row (its records from `pretrained_cells`, those of the zero-epoch
    variant), then the rows of Table 2a and of the AdaBelief table."""
    layout, scale, task = MEDIUM_LLAMA, MEDIUM_LLAMA["scale"], MEDIUM_LLAMA["task"]
    pre = layout["pretrained"]
    scale_cells = {k: v for k, v in cells.items() if k[0] == scale}
    p2a = papers[TABLE2A["paper_csv"]]
    rows = []
    for spec in (TABLE2A, TABLE_ADABELIEF):
        for optim, label in table_rows(spec, papers[spec["paper_csv"]], scale_cells):
            pretrained = label == pre["label"]
            optim = pre["optim"] if pretrained else optim
            source = pretrained_cells if pretrained else cells
            overrides = pre["overrides"] if pretrained else ""
            rows.append(dict(label=label, optim=optim, pretrained=pretrained,
                             recs=source.get((scale, task, optim), []),
                             command=command(task, optim, scale, overrides),
                             paper_gb=p2a.get(label, {}).get("state_memory_gb", "")))
    return rows


def medium_section(papers, cells, pretrained_cells):
    """table2a.md's section of the medium scale, in its own layout (MEDIUM_LLAMA)."""
    rows = medium_rows(papers, cells, pretrained_cells)
    pretrained = [r for row in rows if row["pretrained"] for r in row["recs"]]
    finetuned = [r for row in rows if not row["pretrained"] for r in row["recs"]]
    layout = MEDIUM_LLAMA
    if pretrained or finetuned:
        header = layout["header"].format(**medium_facts(pretrained, finetuned))
    else:
        header = layout["no_records"]
    table = md_columns(layout["columns"], rows, params=params_text(pretrained + finetuned))
    return [f"## {layout['title']}", "", header, "", table, ""]


# ----------------------------------------------------------------------------- LaTeX


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
    for scale in scales_for(cells, tasks, spec.get("own_layout_scales", ())):
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
            if task not in SCALE_TASKS.get(scale, (task,)):
                continue
            label = OPTIMIZERS[optim].label if optim in OPTIMIZERS else None
            paper_gb = paper2a.get(label, {}).get("state_memory_gb", "") if task == "llama" else ""
            rows.append(dict(task=task, optim=optim, scale=scale, paper_gb=paper_gb,
                             recs=cells.get((scale, task, optim), [])))
        out += [f"## scale: {scale}", "", md_columns(MEMORY_COLUMNS, rows), ""]
    return "\n".join(out).rstrip("\n") + "\n"


# ----------------------------------------------------------------------------- claims

CLAIMS_INTRO = (
    "Each row compares our runs of an optimizer with a baseline ({baseline}, unless the claim "
    "names another) on one task and metric, at the "
    "scale named in the row; scale and hardware come from the records. The small and medium "
    "scales are not comparable in absolute value with the paper (other data, models and "
    "budgets): a row tests only the direction of the claim.",
    "Values: mean ± sample std over seeds (n seeds). Verdict: \"within seed spread\" if "
    "|difference| <= std(baseline) + std(compared), else \"outside seed spread\" (better or "
    "worse: higher is better, lower for logloss); \"n < 2: no spread\" when either side has "
    "fewer than 2 seeds; \"no records\" when either side has none. \"k crashed\" counts the "
    "seeds whose loss became NaN/inf (crash notes, no record).",
)


def values_of(recs, metric_name):
    return [v for v in (r["metrics"].get(metric_name) for r in recs) if v is not None]


def verdict(base, comp, lower_is_better=False):
    """How the compared values (`comp`) stand against the baseline's (`base`), seed spread
    being the sum of the two sample stds."""
    if not base or not comp:
        return "no records"
    if len(base) < 2 or len(comp) < 2:
        return "n < 2: no spread"
    (base_mean, base_std), (comp_mean, comp_std) = mean_std(base), mean_std(comp)
    diff = comp_mean - base_mean
    if abs(diff) <= base_std + comp_std:
        return "within seed spread"
    better = diff < 0 if lower_is_better else diff > 0
    return f"outside seed spread ({'better' if better else 'worse'})"


def side_text(recs, values, crashes, decimals):
    """One side's values: mean ± std (n), or why there is none; with its crashed seeds."""
    if values:
        text = f"{fmt_mean_std(values, decimals)} (n={len(values)})"
    else:
        text = "no value in records" if recs else "—"
    return f"{text}, {len(crashes)} crashed" if crashes else text


def diverged_text(comp_recs, row):
    """'diverged: seeds 1, 2 below 20' when a record's metric fell below the row's threshold."""
    limit = row.get("diverged_below")
    values = [(r["seed"], r["metrics"].get(row["metric"])) for r in comp_recs]
    seeds = [str(seed) for seed, v in values if limit is not None and v is not None and v < limit]
    if not seeds:
        return ""
    return f"; diverged: seed{'s' if len(seeds) > 1 else ''} {', '.join(seeds)} below {limit}"


def claim_row(row, optim, cells_of, crashes_of, baseline=CLAIM_BASELINE):
    """The strings of one claims.md row (`optim` against `baseline`), or None for an optional
    metric no record has. cells_of / crashes_of: variant -> index_records of the records /
    crash notes."""
    key = (row["scale"], row["task"])
    cells, crash_cells = cells_of(row.get("variant")), crashes_of(row.get("variant"))
    base_recs, comp_recs = cells.get(key + (baseline,), []), cells.get(key + (optim,), [])
    base, comp = values_of(base_recs, row["metric"]), values_of(comp_recs, row["metric"])
    if row.get("optional") and not (base or comp):
        return None
    lower = row.get("lower_is_better", False)
    d = row["decimals"]
    diff = "—"
    if base and comp:
        diff = fmt_signed(statistics.fmean(comp) - statistics.fmean(base), d)
    if base_recs and comp_recs and not (base and comp):
        text = "no value in records"
    else:
        text = verdict(base, comp, lower)
    comp_crashes = crash_cells.get(key + (optim,), [])
    if comp_crashes:
        text += f"; crashed (NaN/inf loss) in {len(comp_crashes)} seed(s)"
    hardware = "+".join(sorted({hardware_label(r) for r in base_recs + comp_recs})) or "—"
    scale = row["scale"] + (f" ({row['variant']})" if row.get("variant") else "")
    return dict(task=row["task"], scale=scale, metric=row["metric"],
                lower_is_better=lower, label=OPTIMIZERS[optim].label, optim=optim,
                base=side_text(base_recs, base, crash_cells.get(key + (baseline,), []), d),
                comp=side_text(comp_recs, comp, comp_crashes, d), diff=diff,
                verdict=text + diverged_text(comp_recs, row), hardware=hardware)


def render_claims(records, notes, records_label):
    """claims.md: per claim of the paper, our runs against its baseline (adamw32 unless the
    claim names another) and a verdict."""
    cells_of = functools.cache(lambda variant: index_records(records, variant))
    crashes_of = functools.cache(lambda variant: index_records(notes, variant))

    def label(optim):
        return f"{OPTIMIZERS[optim].label} (`{optim}`)"

    out = ["# What reproduces: the SOLO paper's claims (arXiv 2505.00347) in our runs", "",
           f"Ours come from records in {records_label}.", ""]
    out += [p.format(baseline=label(CLAIM_BASELINE)) + "\n" for p in CLAIMS_INTRO]
    for claim in CLAIMS + [CLAIM_BASELINES]:
        baseline = claim.get("baseline", CLAIM_BASELINE)
        rows = [claim_row(m, o, cells_of, crashes_of, baseline) for o in claim["optims"]
                for m in claim["metrics"]]
        out += [f"## {claim['title']}", ""]
        out += [claim["note"], ""] if claim.get("note") else []
        table = md_columns(CLAIM_COLUMNS, [r for r in rows if r], baseline=label(baseline))
        out += [table, ""]
    return "\n".join(out).rstrip("\n") + "\n"


# ----------------------------------------------------------------------------- main


def make_tables(records_dir, paper_dir, out_dir, records_label=None):
    """Write all tables; return {file name: text}. Raises RecordError on a bad record."""
    records_label = records_label or str(records_dir)
    records, notes = split_crash_notes(load_records(records_dir, variants=True, crash_notes=True))
    cells = index_records(records)
    pretrained_cells = index_records(records, MEDIUM_LLAMA["pretrained"]["variant"])
    papers = {spec["paper_csv"]: load_paper(paper_dir, spec["paper_csv"]) for spec in TABLES}
    p1, p2a = papers[TABLE1["paper_csv"]], papers[TABLE2A["paper_csv"]]
    adabelief = (TABLE_ADABELIEF, papers[TABLE_ADABELIEF["paper_csv"]])
    medium = medium_section(papers, cells, pretrained_cells)
    texts = {
        "table1.md": render_md(TABLE1, p1, cells, records_label),
        "table1.tex": render_tex(TABLE1, p1, cells, records_label),
        "table2a.md": render_md(TABLE2A, p2a, cells, records_label, [adabelief], medium),
        "table2a.tex": render_tex(TABLE2A, p2a, cells, records_label),
        "memory.md": render_memory(papers, cells, records_label),
        "claims.md": render_claims(records, notes, records_label),
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
