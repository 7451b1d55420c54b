"""The e2e and the LLaMA-7B / LLaVA-1.5-7B memory tables: same renderer and layouts as
make_tables, same records reader; regenerating them from the committed inputs gives the
committed files."""

import json
import shutil
import subprocess
import sys

import pytest
from harness_utils import ROOT

from scripts import e2e_table, memory_table, table_layouts, table_render

E2E = ROOT / "results" / "bench" / "e2e"


def test_e2e_table_from_the_committed_records_is_the_committed_table(tmp_path):
    e2e_table.main(["--out", str(tmp_path)])
    assert (tmp_path / "e2e.md").read_text() == (ROOT / "results" / "bench" / "e2e.md").read_text()
    def runs(path):  # record paths are absolute: where the checkout was
        rows = json.loads(path.read_text())
        return [[{k: v for k, v in x.items() if k != "record"} for x in r["runs"]] for r in rows]

    assert runs(tmp_path / "e2e.json") == runs(ROOT / "results" / "bench" / "e2e.json")


def test_e2e_table_names_a_bad_record(tmp_path):
    shutil.copytree(E2E / "rep1", tmp_path / "rep1")
    bad = tmp_path / "rep1" / "small" / "swin" / "solo_4_2bit" / "seed0.json"
    rec = json.loads(bad.read_text())
    rec["time"]["wall_s"] = "slow"
    bad.write_text(json.dumps(rec))
    with pytest.raises(SystemExit, match=f"{bad}: time.wall_s must be number"):
        e2e_table.main(["--records", str(tmp_path / "rep1"), "--out", str(tmp_path / "out")])


def test_e2e_table_lists_the_registry_for_an_unknown_optimizer(tmp_path, capsys):
    with pytest.raises(SystemExit):
        e2e_table.main(["--optims", "adamw32", "adamw3bit", "--out", str(tmp_path)])
    err = capsys.readouterr().err
    assert "invalid choice: 'adamw3bit'" in err and "solo_4_2bit" in err


def test_llama7b_memory_layout():
    rows = [{"preset": "adamw32", "n_params": 2**30, "bytes": 8 * 2**30, "paper_gb": "8.10"},
            {"preset": "solo_3bit", "n_params": 2**30, "bytes": 2**29, "paper_gb": ""}]
    assert table_render.md_columns(table_layouts.LLAMA7B_MEMORY_COLUMNS, rows).splitlines() == [
        "| preset | bits/param (m+v) | bytes | ours GB | paper GB | ours - paper |",
        "|---|---|---|---|---|---|",
        "| adamw32 | 64.000 | 8,589,934,592 | 8.00 | 8.10 | -0.10 |",
        "| solo_3bit | 4.000 | 536,870,912 | 0.50 | — |  |"]


def test_llava_trains_the_language_model_and_projector_only():
    model = memory_table.build("llava15_7b")
    d, ff, layers, vocab = 4096, 11008, 32, 32000
    # LLaMA-2-7B shape: embeddings + lm_head, per layer q/k/v/o, gate/up/down, two RMSNorms;
    # final norm. Projector: Linear(1024, 4096) + GELU + Linear(4096, 4096), with biases.
    language_model = 2 * vocab * d + layers * (4 * d * d + 3 * d * ff + 2 * d) + d
    projector = 1024 * d + d + d * d + d
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == (
        language_model + projector) == 6_759_395_328
    assert trainable and not any("vision_tower" in n for n in trainable)
    assert any("multi_modal_projector" in n for n in trainable)
    assert sum(p.numel() for p in model.parameters() if not p.requires_grad) == 303_507_456


@pytest.mark.slow
@pytest.mark.parametrize("model", ["llama7b", "llava15_7b"])
def test_memory_table_is_the_committed_one(tmp_path, model):
    out = subprocess.run([sys.executable, str(ROOT / "scripts" / "memory_table.py"), "--models",
                          model, "--out-dir", str(tmp_path)], capture_output=True, text=True,
                         cwd=ROOT, timeout=300)
    assert out.returncode == 0, out.stderr
    assert (tmp_path / f"{model}.md").read_text() == (
        ROOT / "results" / "memory" / f"{model}.md").read_text()
