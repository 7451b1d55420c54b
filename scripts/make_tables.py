#!/usr/bin/env python
"""Turn run records into tables shaped like the papers' Table 1, Table 2a, a memory table, and
claims.md: which of the paper's claims our runs reproduce.

    python scripts/make_tables.py [--records results/runs] [--paper results/paper] \\
        [--out results/tables] [--readme README.md] [--claims conf/claims.yaml]  # cwd-relative

Every cell shows the paper's value beside ours (mean ± std over seeds, n, scale, hardware);
a cell with no records shows the exact `run.py` command that fills it. The output is
deterministic (sorted, fixed float formats, no timestamps) so it can be golden-tested, and
tests/harness/test_tables_committed.py checks that results/tables/ is what this makes now.
The medium scale (SmolLM2-135M fine-tuning) is another model than the paper's LLaMA-7B: it gets a
section of its own in table2a.md, with the pretrained model (a zero-epoch variant run) as a row.

Rows and their labels come from the optimizer registry (solo.presets and the peers of
experiments/optimizers.py): a table lists the presets whose label is a row of the paper's
table, in registry order, then any other entry of the table's optimizer family with records
for its tasks. Records are read through experiments/records.py, which validates each one.
Modules: table_records.py (records by cell, the papers' CSVs), table_layouts.py (every layout,
also those of scripts/memory_table.py and scripts/e2e_table.py), table_render.py (cells and
markdown), table_sections.py (the medium section, memory.md), and for claims.md the claims of
conf/claims.yaml (claims_spec.py) tested by claim_stats.py, rendered with provenance marks
(table_provenance.py) by claims_table.py, which also makes claims_summary.md and the block
between the README's claims markers. Imports torch (through the registry) and scipy, but
neither hydra nor omegaconf.
"""

import argparse
import statistics
import sys
from pathlib import Path

from experiments.records import RecordError, load_records
from scripts import headroom
from scripts.claims_spec import CLAIMS_FILE, ClaimsError, load_spec
from scripts.claims_table import README_BEGIN, render_claims, replace_block, summary_block
from scripts.table_layouts import MEDIUM_LLAMA, TABLE1, TABLE2A, TABLE_ADABELIEF, TABLES
from scripts.table_records import (  # noqa: F401  (load_paper: scripts/memory_table.py)
    index_records,
    load_paper,
    scales_for,
    split_crash_notes,
    table_rows,
)
from scripts.table_render import (
    SAME_RUN,
    command,
    fmt_mean_std,
    fmt_num,
    hardware_label,
    md_table,
    tex_escape,
)
from scripts.table_sections import PROVENANCE_LINE, medium_section, render_memory

LEGEND = (
    "Ours: mean ± sample std over seeds (n seeds, scale, hardware), Δ = ours - paper (paper scale only). "
    "Only scale=paper is comparable with the paper; smoke and small are sanity runs. "
    "A cell without records shows the command that fills it."
)


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


# ----------------------------------------------------------------------------- main


def make_tables(records_dir, paper_dir, out_dir, records_label=None, readme=None,
                claims=CLAIMS_FILE, marks=None, recipes=None):
    """Write all tables to ``out_dir`` and, when ``readme`` names a file with the claims markers,
    the claims block into it; return {file name: text} of the tables. ``claims``: the
    pre-registered claims; ``marks``: table_provenance.Marks (default: the current tree);
    ``recipes``: a folder of recipes (conf/recipe) to write the headroom blocks into.
    Raises RecordError on a bad record, ClaimsError on a bad claims file."""
    records_label = records_label or str(records_dir)
    spec = load_spec(claims)
    records, notes = split_crash_notes(load_records(records_dir, variants=True, crash_notes=True))
    cells = index_records(records)
    pretrained_cells = index_records(records, MEDIUM_LLAMA["pretrained"]["variant"])
    papers = {spec["paper_csv"]: load_paper(paper_dir, spec["paper_csv"]) for spec in TABLES}
    p1, p2a = papers[TABLE1["paper_csv"]], papers[TABLE2A["paper_csv"]]
    adabelief = (TABLE_ADABELIEF, papers[TABLE_ADABELIEF["paper_csv"]])
    medium = medium_section(papers, cells, pretrained_cells)
    rooms = headroom.headroom(spec, records)
    claims_md, lines = render_claims(spec, records, notes, records_label, marks,
                                     headroom.mdd_of(rooms))
    texts = {
        "table1.md": render_md(TABLE1, p1, cells, records_label),
        "table1.tex": render_tex(TABLE1, p1, cells, records_label),
        "table2a.md": render_md(TABLE2A, p2a, cells, records_label, [adabelief], medium),
        "table2a.tex": render_tex(TABLE2A, p2a, cells, records_label),
        "memory.md": render_memory(papers, cells, records_label),
        "claims.md": claims_md,
        "claims_summary.md": "# The paper's claims in our runs\n\n"
                             + summary_block(spec, lines, records_label, "claims.md"),
        "headroom.md": headroom.render(rooms, records_label),
    }
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, text in texts.items():
        (out_dir / name).write_text(text)
    if readme is not None:
        write_readme_block(Path(readme), summary_block(spec, lines, records_label,
                                                       "results/tables/claims.md"))
    if recipes is not None:
        headroom.write_recipes(rooms, recipes)
    return texts


def write_readme_block(readme, block):
    """Put ``block`` between the claims markers of ``readme``; say so when it has none."""
    text = readme.read_text() if readme.exists() else ""
    new = replace_block(text, block)
    if new is None:
        print(f"make_tables: {readme} has no {README_BEGIN} marker; claims block not written",
              file=sys.stderr)
    elif new != text:
        readme.write_text(new)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", default="results/runs", help="run records root")
    parser.add_argument("--paper", default="results/paper", help="the papers' numbers (CSV)")
    parser.add_argument("--out", default="results/tables", help="where the tables go")
    parser.add_argument("--readme", default="README.md",
                        help="file whose claims markers get the summary block ('' for none)")
    parser.add_argument("--claims", default=str(CLAIMS_FILE), help="the pre-registered claims")
    parser.add_argument("--recipes", default=None,
                        help="recipes to get the headroom blocks ('' for none; default: "
                             "conf/recipe when --records is the committed results/runs)")
    args = parser.parse_args(argv)
    if args.recipes is None:  # the recipes state the committed records' headroom, no other's
        args.recipes = "conf/recipe" if args.records == "results/runs" else ""
    try:
        texts = make_tables(args.records, args.paper, args.out, readme=args.readme or None,
                            claims=args.claims, recipes=args.recipes or None)
    except RecordError as e:
        print(f"make_tables: bad record: {e}", file=sys.stderr)
        return 2
    except ClaimsError as e:
        print(f"make_tables: bad claims file: {e}", file=sys.stderr)
        return 2
    for name in texts:
        print(Path(args.out) / name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
