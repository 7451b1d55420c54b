"""How much room each task leaves for an optimizer to differ, and the smallest difference its
seeds can show: per margin set of conf/claims.yaml without a variant (a recipe) and per metric,
32-bit AdamW's mean and seed std, its distance from the task's trivial result and from the
metric's ceiling, and the minimum detectable difference (MDD) of a comparison with
:data:`SEEDS` paired seeds. A claim's equivalence margin below the MDD cannot be decided by the
task at that many seeds: the claims table says so on that row.

MDD: see :data:`RULE`.

Written by ``make tables``: results/tables/headroom.md, and the block between the markers
:data:`BEGIN` / :data:`END` at the end of each recipe (conf/recipe/<task>_<scale>.yaml); the
block is comments only, so rewriting it leaves the recipe's runs current.
"""

import math
import statistics
from pathlib import Path

from scipy import stats

from scripts.table_records import index_records
from scripts.table_render import fmt_num

SEEDS, ALPHA, POWER = 5, 0.05, 0.8
BASELINE = "adamw32"
BEGIN = "# --- headroom: written by make tables from the committed records; do not edit ---"
END = "# --- headroom: end ---"


RULE = (f"MDD: the true mean difference that a two-sided paired t test at level {ALPHA} finds "
        f"with probability {POWER}, (t(1 - {ALPHA}/2, n-1) + t({POWER}, n-1)) x sd_d / sqrt(n) "
        f"with n = {SEEDS} seeds, the sd of a paired difference taken as sqrt(2) x 32-bit "
        "AdamW's seed std (two independent runs; pairing by seed can only lower it). It is "
        "also about the margin an equivalence test needs to call two identical optimizers "
        "equivalent with that probability: a margin below it leaves the claim undecided at "
        f"{SEEDS} seeds.")


def detectable(sd: float, n: int = SEEDS, alpha: float = ALPHA, power: float = POWER) -> float:
    """The MDD (module docstring) of ``n`` paired seeds when one run's seed std is ``sd``."""
    t = stats.t.ppf(1 - alpha / 2, n - 1) + stats.t.ppf(power, n - 1)
    return t * math.sqrt(2) * sd / math.sqrt(n)


def headroom(spec, records) -> list[dict]:
    """One row per (setting without variant, metric) that 32-bit AdamW's records have."""
    cells = index_records(records)
    settings = {c.setting.key: c for claim in spec.claims for c in claim.cells
                if c.variant is None and c.setting.key == f"{c.scale}/{c.task}"}
    rows = []
    for key, cell in settings.items():
        recs = cells.get((cell.scale, cell.task, BASELINE), [])
        for m in cell.setting.metrics:
            values = [r["metrics"][m.name] for r in recs if r["metrics"].get(m.name) is not None]
            if not values:
                continue
            mean = statistics.mean(values)
            sd = statistics.stdev(values) if len(values) > 1 else None
            sign = 1 if m.higher_is_better else -1
            mdd = detectable(sd) if sd is not None else None
            rows.append(dict(
                key=key, scale=cell.scale, task=cell.task, metric=m, n=len(values), mean=mean,
                sd=sd, mdd=mdd, from_trivial=None if m.trivial is None else
                sign * (mean - m.trivial), to_ceiling=None if m.ceiling is None else
                sign * (m.ceiling - mean), decides=None if mdd is None else m.margin >= mdd))
    return rows


def mdd_of(rows) -> dict:
    """{(setting key, metric name): MDD or None}, for the claims table."""
    return {(r["key"], r["metric"].name): r["mdd"] for r in rows}


def _num(value, decimals):
    return "—" if value is None else fmt_num(value, decimals)


def _facts(r) -> list[str]:
    d = r["metric"].decimals
    sd = "—" if r["sd"] is None else fmt_num(r["sd"], d)
    verdict = ("n<2: no MDD yet" if r["decides"] is None else
               "the margin can decide" if r["decides"] else
               f"margin below the MDD: {SEEDS} seeds cannot decide an equivalence claim here")
    return [f"{r['metric'].name}", f"{fmt_num(r['mean'], d)} ± {sd} (n={r['n']})",
            _num(r["from_trivial"], d), _num(r["to_ceiling"], d), _num(r["mdd"], d),
            f"±{fmt_num(r['metric'].margin, d)}", verdict]


HEADER = ["metric", "32-bit AdamW mean ± seed std", "from trivial", "to ceiling",
          f"MDD, {SEEDS} paired seeds", "margin", "so"]


def render(rows, records_label) -> str:
    """results/tables/headroom.md."""
    out = ["# Headroom: what the tasks can tell apart", "",
           f"From the `{BASELINE}` records in {records_label}. {RULE}", "",
           "Distances are in the metric's units, positive when 32-bit AdamW is better than the "
           "trivial result and worse than the ceiling (conf/claims.yaml names both per metric).",
           ""]
    for key in dict.fromkeys(r["key"] for r in rows):
        out += [f"## {key}", "", "| " + " | ".join(HEADER) + " |",
                "|" + "---|" * len(HEADER)]
        out += ["| " + " | ".join(_facts(r)) + " |" for r in rows if r["key"] == key]
        out.append("")
    return "\n".join(out).rstrip("\n") + "\n"


def recipe_block(rows) -> str:
    lines = [BEGIN, f"# 32-bit AdamW ({BASELINE}) over its committed seeds. MDD: the smallest "
             f"difference {SEEDS} paired", f"# seeds detect (alpha {ALPHA}, power {POWER}; "
             "results/tables/headroom.md). Per metric:", "# mean +- seed std | from trivial | "
             "to ceiling | MDD | the claims' margin"]
    for r in rows:
        f = _facts(r)
        lines.append(f"#   {f[0]}: {f[1]} | {f[2]} | {f[3]} | {f[4]} | {f[5]}"
                     + ("" if r["decides"] in (None, True) else " (cannot decide)"))
    return "\n".join(lines + [END]) + "\n"


def with_block(text: str, block: str) -> str:
    """``text`` with its headroom block replaced by ``block`` (appended when it has none)."""
    start, end = text.find(BEGIN), text.find(END)
    if start >= 0 and end > start:
        return text[:start] + block + text[end + len(END):].lstrip("\n")
    return text.rstrip("\n") + "\n" + block


def write_recipes(rows, recipe_dir) -> list[Path]:
    """Put each setting's block into conf/recipe/<task>_<scale>.yaml; the files changed. A
    recipe that has a block but no 32-bit records any more (they were superseded) says so,
    rather than keep numbers of records that are gone."""
    changed = []
    mine = {}
    for r in rows:
        mine.setdefault(Path(recipe_dir) / f"{r['task']}_{r['scale']}.yaml", []).append(r)
    for path in sorted(Path(recipe_dir).glob("*.yaml")):
        text = path.read_text()
        if path not in mine and BEGIN not in text:
            continue
        block = recipe_block(mine[path]) if path in mine else "\n".join([
            BEGIN, f"# No committed records of 32-bit AdamW ({BASELINE}) for this recipe yet.",
            END]) + "\n"
        new = with_block(text, block)
        if new != text:
            path.write_text(new)
            changed.append(path)
    return changed
