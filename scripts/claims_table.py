"""claims.md: each pre-registered claim of conf/claims.yaml tested on our records. Per claim,
comparison, task and metric: the paired statistics and verdict of claim_stats, the margin used,
the beta1 of both sides, provenance marks; a summary line per comparison; and the short block
that README.md (between its markers) and claims_summary.md carry.
"""

import functools

from experiments.optimizers import OPTIMIZERS
from scripts.claim_stats import compare
from scripts.headroom import ALPHA, POWER, SEEDS
from scripts.table_layouts import CLAIM_COLUMNS
from scripts.table_provenance import FOOTNOTES, Marks, beta1_text, marks_text, note
from scripts.table_records import index_records
from scripts.table_render import (
    command,
    fmt_mean_std,
    fmt_num,
    fmt_signed,
    hardware_label,
    md_columns,
)

README_BEGIN, README_END = "<!-- claims:begin -->", "<!-- claims:end -->"
CLAIMS_PATH = "conf/claims.yaml"
ORDER = ("equivalent", "better", "worse", "inconclusive", "crashed", "n<2")
# Which verdicts support / contradict a claim, per test (conf/claims.yaml's header).
# "degradation" is judged as "crash": the compared side must be worse (or crash more seeds).
HOLDS = {"equivalence": ("equivalent", "better"), "crash": ("worse",), "degradation": ("worse",)}
FAILS = {"equivalence": ("worse",), "crash": ("equivalent", "better"),
         "degradation": ("equivalent", "better")}

INTRO = """\
Each claim, its runs and its equivalence margins are pre-registered in {spec} (margins fixed on \
{fixed_on}, after the runs committed by then and before their reruns: {fraction} of the 32-bit \
result's distance from the task's trivial result, the largest relative gap between the paper's \
16/8-bit and 32-bit AdamW rows of Table 1; each row prints its margin, the file gives each \
margin's derivation). The small and medium scales are not comparable in absolute value with the \
paper (other data, models and budgets).

Per claim, task and metric, the seeds both sides ran are paired (a seed only one side has is \
dropped and counted). Sides: mean ± sample std over the paired seeds. Difference: mean of \
compared - baseline with its 95% CI (paired t); TOST p: the two one-sided tests against \
±margin. Verdict: **equivalent** (CI inside ±margin), **worse** / **better** (CI entirely beyond \
the margin on that side; lower is better for losses), **inconclusive** (CI overlaps a margin \
edge), **crashed** (seeds whose loss became NaN/inf, crash notes, or that fell under the task's \
divergence floor, counted per side), **n<2** (fewer than 2 pairs). An equivalence claim holds \
on a metric that is equivalent or better and fails on one that is worse or where the compared \
side crashed more seeds; a crash (or degradation) claim holds on a metric that is worse or where \
the compared side crashed more seeds, and fails on one that is equivalent or better. β1: the beta1 each side \
ran with; "differ" flags rows comparing different beta1."""


MDD_NOTE = (f"margin below the MDD: the smallest difference {SEEDS} paired seeds detect (alpha "
            f"{ALPHA}, power {POWER}) from 32-bit AdamW's seed std (results/tables/headroom.md); at "
            f"{SEEDS} seeds this task cannot decide the claim on this metric, whatever the "
            "verdict reads.")


def label(optim, variant=None):
    name = f"{OPTIMIZERS[optim].label} (`{optim}`"
    return name + (f", {variant})" if variant else ")")


class Evidence:
    """The records and crash notes of each (scale, task, optim) cell, per variant."""

    def __init__(self, records, notes):
        self.cells = functools.cache(lambda variant: index_records(records, variant))
        self.crashes = functools.cache(lambda variant: index_records(notes, variant))

    def side(self, cell, optim, variant):
        key = (cell.scale, cell.task, optim)
        return self.cells(variant).get(key, []), self.crashes(variant).get(key, [])


def crashed_seeds(recs, notes, setting):
    """Seeds that crashed (a crash note) or fell under the setting's divergence floor."""
    floor = setting.diverged or {}
    low = {r["seed"] for r in recs if floor and
           (r["metrics"].get(floor["metric"]) is not None and
            r["metrics"][floor["metric"]] < floor["below"])}
    return low | {n["seed"] for n in notes}


def side_text(values, recs, notes, metric, marks):
    """One side's cell: mean ± std of the paired values (or of all its values, unpaired), marks."""
    if values:
        text = f"{fmt_mean_std(values, metric.decimals)} (n={len(values)})"
    else:
        own = [r["metrics"][metric.name] for r in recs if r["metrics"].get(metric.name) is not None]
        text = (f"{fmt_mean_std(own, metric.decimals)} (n={len(own)}, unpaired)" if own
                else "no value in records" if recs else f"no records, {len(notes)} crashed")
    extra = marks_text(marks.of(recs)) if recs else ""
    return f"{text}; {extra}" if extra else text


def verdict_text(cmp, seeds):
    if cmp.verdict != "crashed":
        return f"**{cmp.verdict}**"
    (nb, nc), (sb, sc) = cmp.crashed, seeds
    return f"**crashed** (compared {nc} of {sc} seeds, baseline {nb} of {sb})"


def outcome(test, cmp):
    """holds / fails / open: what the verdict says about the claim (HOLDS, FAILS)."""
    if cmp.verdict == "crashed":
        more = cmp.crashed[1] > cmp.crashed[0]
        return ("fails" if test == "equivalence" else "holds") if more else "open"
    return "holds" if cmp.verdict in HOLDS[test] else "fails" if cmp.verdict in FAILS[test] \
        else "open"


def margin_text(metric, mdd):
    """'±0.64', or '±0.64 < MDD 1.01[^mdd]' when the task's seeds cannot decide it."""
    text = f"±{fmt_num(metric.margin, max(metric.decimals, 2))}"
    if mdd is not None and metric.margin < mdd:
        text += f" < MDD {fmt_num(mdd, max(metric.decimals, 2))}{note('mdd')}"
    return text


def metric_row(cell, metric, sides, betas, marks, mdds):
    """A row of one metric: the strings of CLAIM_COLUMNS and the Comparison."""
    (brecs, bnotes), (crecs, cnotes) = sides
    values = [{r["seed"]: r["metrics"][metric.name] for r in recs
               if r["metrics"].get(metric.name) is not None} for recs in (brecs, crecs)]
    crashed = [crashed_seeds(r, n, cell.setting) for r, n in sides]
    cmp = compare(values[0], values[1], metric.margin, metric.higher_is_better,
                  crashed=tuple(len(c) for c in crashed))
    d = metric.decimals
    mdd = mdds.get((cell.setting.key, metric.name))
    diff = "—" if cmp.diff is None else fmt_signed(cmp.diff, d)
    if cmp.ci:
        diff += f" [{fmt_signed(cmp.ci[0], d)}, {fmt_signed(cmp.ci[1], d)}]"
    seeds = [len({r["seed"] for r in recs} | {n["seed"] for n in notes}) for recs, notes in sides]
    return dict(
        task=cell_name(cell), metric=metric.name + (" (lower is better)"
                                                    if not metric.higher_is_better else ""),
        margin=margin_text(metric, mdd), beta1=betas, undecidable=mdd is not None and
        metric.margin < mdd,
        base=side_text(cmp.base, brecs, bnotes, metric, marks),
        comp=side_text(cmp.comp, crecs, cnotes, metric, marks),
        pairs=str(cmp.n) + (f" ({cmp.dropped} dropped)" if cmp.dropped else ""), diff=diff,
        p="—" if cmp.p_tost is None else "<0.001" if cmp.p_tost < 0.001 else f"{cmp.p_tost:.3f}",
        verdict=verdict_text(cmp, seeds),
        hardware="+".join(sorted({hardware_label(r) for r in brecs + crecs})) or "—",
        cmp=cmp, name=f"{cell.task}{f' ({cell.variant})' if cell.variant else ''} {metric.name}")


def cell_name(cell):
    return f"{cell.task} ({cell.scale}{', ' + cell.variant if cell.variant else ''})"


def missing_row(cell, comparison, sides, base_variant):
    """The one row of a cell where a side has no runs: the commands that fill it."""
    def text(optim, variant, recs):
        if recs:
            return f"{len(recs)} seeds"
        if variant:
            return f"no records (variant {variant})"
        return f"no records: {command(cell.task, optim, cell.scale)}"

    (brecs, _), (crecs, _) = sides
    return dict(task=cell_name(cell), metric="—", margin="—", beta1="—",
                base=text(comparison.baseline, base_variant, brecs),
                comp=text(comparison.compared, cell.variant, crecs), pairs="0", diff="—", p="—",
                verdict="**n<2**", hardware="—", cmp=None, name=cell_name(cell))


def comparison_rows(comparison, cells, evidence, marks, mdds):
    rows, unrecorded = [], []
    for cell in cells:
        base_variant = comparison.baseline_variant or cell.variant
        sides = (evidence.side(cell, comparison.baseline, base_variant),
                 evidence.side(cell, comparison.compared, cell.variant))
        if not all(recs or notes for recs, notes in sides):
            rows.append(missing_row(cell, comparison, sides, base_variant))
            continue
        betas = beta1_cell(*(beta1_text(recs) for recs, _ in sides))
        recs = sides[0][0] + sides[1][0]
        for metric in cell.setting.metrics:
            if any(r["metrics"].get(metric.name) is not None for r in recs):
                rows.append(metric_row(cell, metric, sides, betas, marks, mdds))
            else:
                unrecorded.append(f"{cell.task} {metric.name}")
    return rows, unrecorded


def beta1_cell(base, comp):
    """'0.9 / 0.818, inferred[^beta1]; **differ**'."""
    (btext, bvals, binf), (ctext, cvals, cinf) = base, comp
    text = f"{btext} / {ctext}" + (f", inferred{note('beta1')}" if binf or cinf else "")
    return text + ("; **differ**" if bvals and cvals and bvals != cvals else "")


def summary(rows, test):
    """'equivalent on 4 of 6 metrics, worse on dcn auc, inconclusive on 1; holds on 4, fails
    on 1, open on 1'."""
    judged = [r for r in rows if r["cmp"]]
    missing = [r["name"] for r in rows if not r["cmp"]]
    if not judged:
        return f"no records on {', '.join(missing)} yet: nothing to judge"
    by = {v: [r["name"] for r in judged if r["cmp"].verdict == v] for v in ORDER}
    parts = [f"equivalent on {len(by['equivalent'])} of {len(judged)} metrics"]
    for v in ORDER[1:]:
        if by[v]:
            parts.append(f"{v} on " + (", ".join(by[v]) if len(by[v]) <= 3 else str(len(by[v]))))
    if missing:
        parts.append("no records on " + ", ".join(missing))
    undecidable = [r for r in judged if r["undecidable"]]
    if undecidable:
        parts.append(f"margin below the {SEEDS}-seed MDD on {len(undecidable)}")
    outcomes = [outcome(test, r["cmp"]) for r in judged]
    tally = ", ".join(f"{k} on {outcomes.count(k)}" for k in ("holds", "fails", "open"))
    return f"{', '.join(parts)}; the claim {tally}"


def render_claims(spec, records, notes, records_label, marks=None, mdds=None):
    """(claims.md, one summary line per claim): every claim of ``spec`` tested on ``records`` (crash
    notes ``notes``); ``marks``: a table_provenance.Marks (default: against the current tree);
    ``mdds``: headroom.mdd_of's {(setting, metric): MDD}, to flag margins below it."""
    marks, mdds = marks or Marks(), mdds or {}
    evidence = Evidence(records, notes)
    out = ["# What reproduces: the SOLO paper's claims (arXiv 2505.00347) in our runs", "",
           f"Ours come from records in {records_label}.", "",
           INTRO.format(spec=CLAIMS_PATH, fixed_on=spec.fixed_on,
                        fraction=f"{spec.fraction:.1%}"), ""]
    block = []
    for claim in spec.claims:
        out += [f"## {claim.title}", ""] + ([claim.note, ""] if claim.note else [])
        out += [f"Test: {claim.test}.", ""]
        lines = []
        for comparison in claim.comparisons:
            rows, unrecorded = comparison_rows(comparison, claim.cells, evidence, marks, mdds)
            base = label(comparison.baseline, comparison.baseline_variant)
            who = f"{label(comparison.compared)} against {base}"
            line = summary(rows, claim.test)
            vs = f", {comparison.baseline_variant}" if comparison.baseline_variant else ""
            lines.append(f"`{comparison.compared}` vs `{comparison.baseline}`{vs}: {line}")
            out += [f"### {who}", "", f"Summary: {line}.", ""]
            out += [md_columns(CLAIM_COLUMNS, rows), ""]
            if unrecorded:
                out += [f"Not recorded by these runs: {', '.join(unrecorded)}.", ""]
        block += [f"- {claim.title}: " + "; ".join(lines) + "."]
    notes_ = {**FOOTNOTES, "mdd": MDD_NOTE}
    used = [k for k in notes_ if f"[^{k}]" in "\n".join(out)]
    out += [f"[^{k}]: {notes_[k]}" for k in used]
    return "\n".join(out).rstrip("\n") + "\n", block


def summary_block(spec, lines, records_label, link):
    """The short block: a header and ``lines`` (render_claims' second value, one per claim);
    ``link``: where claims.md lies, relative to the file the block goes into."""
    head = (f"Generated by `make tables` from the records in {records_label} and the claims "
            f"pre-registered in {CLAIMS_PATH} (margins fixed on {spec.fixed_on}); every "
            f"metric with its margin, CI and provenance: [claims.md]({link}).")
    return "\n".join([head, ""] + lines) + "\n"


def replace_block(text, block):
    """``text`` with what lies between README_BEGIN and README_END replaced by ``block``;
    None when the markers are missing."""
    start, end = text.find(README_BEGIN), text.find(README_END)
    if start < 0 or end < start:
        return None
    return text[:start + len(README_BEGIN)] + "\n" + block + text[end:]
