"""The sections of the results tables that are not in a paper's layout: the medium-scale LLaMA
section of table2a.md (SmolLM2-135M fine-tuning, with the pretrained model as a row) and
memory.md (optimizer-state bytes per task and optimizer). Layouts: table_layouts.py."""

from pathlib import Path

from experiments.llama.benchmarks import SHOTS
from experiments.optimizers import OPTIMIZERS
from scripts.table_layouts import (
    MEDIUM_LLAMA,
    MEMORY_COLUMNS,
    SCALE_TASKS,
    TABLE2A,
    TABLE_ADABELIEF,
    TABLES,
    param_count,
)
from scripts.table_records import scales_for, table_rows
from scripts.table_render import command, hardware_label, md_columns

PROVENANCE_LINE = (
    "Paper values are the papers' numbers as printed; ours come from records in {records}."
)


# ----------------------------------------------------------------------------- medium llama


def distinct(values):
    """The values the records agree on, or all of them joined by '/'; '—' when none says."""
    return "/".join(sorted({str(v) for v in values if v is not None})) or "—"


def shots_text(eval_cfgs) -> str:
    """'all 0-shot' or 'mmlu 5-shot, arc_e 0-shot, ...': the shots the records' runs used
    (a recipe's ``eval.shots``, else the runner's default per benchmark: the same rule as
    experiments/llama/evaluate.py's ``shots_of``, which records made there must not change)."""
    per = {}
    for ev in eval_cfgs:
        for key in ev.get("benchmarks") or ():
            per.setdefault(key, set()).add((ev.get("shots") or {}).get(key, SHOTS.get(key, 0)))
    if not per:
        return "—"
    shots = {key: "/".join(str(n) for n in sorted(ns)) for key, ns in per.items()}
    if len(set(shots.values())) == 1:
        return f"all {shots.popitem()[1]}-shot"
    return ", ".join(f"{key} {n}-shot" for key, n in shots.items())


def medium_facts(pretrained, finetuned):
    """What the header of the medium section says, read from the records themselves."""
    recs = pretrained + finetuned
    scale_cfg = [r["config"].get("scale") or {} for r in recs]
    model = [Path(c["pretrained"]).name for c in scale_cfg if c.get("pretrained")]
    hardware = [hardware_label(r) for r in recs]
    return dict(
        model=distinct(model),
        n_train=distinct(c.get("n_train") for c in scale_cfg),
        steps=distinct(r["time"].get("steps") for r in finetuned),
        batch_size=distinct(c.get("batch_size") for c in scale_cfg),
        hardware=distinct(hardware),
        items=distinct((c.get("eval") or {}).get("n_items") for c in scale_cfg),
        shots=shots_text(c.get("eval") or {} for c in scale_cfg),
        n_heldout=distinct(c.get("n_heldout") for c in scale_cfg),
        ppl_tokens=distinct(((c.get("eval") or {}).get("perplexity") or {}).get("n_tokens")
                            for c in scale_cfg),
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
