"""Helpers for the tests of `make tables` (test_tables*.py): the script loaded as a module,
fixture records, valid records made to order, and markdown row parsing."""

import json

from harness_utils import ROOT

from scripts import claims_spec, claims_table, table_provenance  # noqa: F401  (the tests' handles)
from scripts import make_tables as mt

SCRIPT = ROOT / "scripts" / "make_tables.py"
PAPER = ROOT / "results" / "paper"
FIXTURES = ROOT / "tests" / "harness" / "fixtures" / "records"
GOLDEN = ROOT / "tests" / "harness" / "golden"
# The label printed in the tables; fixed so the golden files do not depend on where tests run.
FIXTURES_LABEL = "tests/harness/fixtures/records"

MEDIUM_TITLE = (
    "## scale: medium — SmolLM2-135M-Instruct fine-tuning (not comparable with the paper's LLaMA-7B)"
)
MEDIUM_SCALE_CFG = {
    "name": "medium",
    "pretrained": "data/cache/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
    "data": "sharegpt",
    "n_train": 2000,
    "n_heldout": 200,
    "eval": {"n_items": 150, "perplexity": {"n_tokens": 8192},
             "benchmarks": ["mmlu", "arc_e", "arc_c", "obqa", "siqa"], "shots": {"mmlu": 0}},
    "epochs": 1,
    "batch_size": 8,
    "max_len": 256,
    "lr": 1e-5,
}


def generate(tmp_path, records=FIXTURES, label=FIXTURES_LABEL, **kw):
    """{file name: text} of every table made from ``records`` into tmp_path/tables."""
    return mt.make_tables(records, PAPER, tmp_path / "tables", records_label=label, **kw)


def record(scale, task, optim, seed, metrics, variant=None, state=4096, steps=300, config=None):
    """A valid record (the smoke llama fixture's schema) with the given cell and values."""
    rec = json.loads((FIXTURES / "smoke" / "llama" / "solo_4_2bit" / "seed0.json").read_text())
    rec.update(scale=scale, task=task, optim=optim, seed=seed, variant=variant, metrics=metrics)
    rec["memory"]["state_bytes"] = {"quantized": 0, "full_precision": state, "total": state}
    rec["time"].update(steps=steps, wall_s=600.0 + seed)
    rec["provenance"]["gpu"] = None
    rec["config"].update(config or {})
    return rec


def write(records, rec, crash=False):
    """Write `rec` where load_records looks for it; `crash`: as a crash note instead."""
    cell = records / rec["scale"] / rec["task"] / rec["optim"] / (rec["variant"] or "")
    cell.mkdir(parents=True, exist_ok=True)
    if crash:
        note = {k: rec[k] for k in ("task", "optim", "scale", "seed", "variant", "provenance",
                                    "config")}
        note.update(crashed_at_step=7, loss="nan")
        (cell / f"crash-seed{rec['seed']}.json").write_text(json.dumps(note))
    else:
        (cell / f"seed{rec['seed']}.json").write_text(json.dumps(rec))


def medium(optim, seed, mmlu, acc, variant=None, state=4096, steps=300):
    metrics = dict(mmlu=mmlu, mmlu_n=150, arc_e=acc, arc_e_n=150, arc_c=acc + 1,
                   obqa=acc + 2, siqa=acc + 3, heldout_loss=2.0, wiki_ppl=20.0)
    rec = record("medium", "llama", optim, seed, metrics, variant, state, steps,
                 config={"scale": MEDIUM_SCALE_CFG})
    rec["memory"]["params"] = 134_515_008
    return rec


def row(text, label):
    """The cells of the markdown row whose first cell is `label`."""
    (line,) = [ln for ln in text.splitlines() if ln.startswith(f"| {label} |")]
    return [c.strip() for c in line.strip("|").split("|")]
