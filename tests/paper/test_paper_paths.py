"""Every paper path (scale=paper) end to end on miniature data in the real formats (marker
`paper`): the paper architectures (Swin-T at 224 px with RandAugment, Mixup/CutMix and random
erasing; Transformer-Base with beam-4 SacreBLEU; DCN on the Criteo TSV; a tiny saved Llama with
lm-eval on the prepared benchmarks), cut to 1-2 steps, in one process and under torchrun with 2
gloo ranks (llama through FSDP2), each to a complete, validated record."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from experiments import records

pytestmark = [pytest.mark.paper, pytest.mark.timeout(900)]

ROOT = Path(__file__).resolve().parents[2]


def launch(tmp_path, ranks: int, *overrides):
    """run.py (ranks=1) or torchrun --nproc_per_node=ranks run.py; (process, records)."""
    env = {**os.environ, "OMP_NUM_THREADS": str(max(1, 2 // ranks)), "WANDB_MODE": "offline",
           "WANDB_SILENT": "true", "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
           "SOLO_RECORDS_DIR": str(tmp_path / "records"),
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    launcher = [sys.executable] if ranks == 1 else [
        sys.executable, "-m", "torch.distributed.run", "--standalone",
        f"--nproc_per_node={ranks}"]
    cmd = [*launcher, str(ROOT / "run.py"), "scale=paper", "logger=none",
           f"hydra.run.dir={tmp_path / 'run'}", *overrides]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=ROOT, timeout=850)
    return out, sorted((tmp_path / "records").rglob("*.json"))


def the_record(out, recs, world: int, steps: int) -> dict:
    assert out.returncode == 0, (out.stdout + out.stderr)[-4000:]
    assert len(recs) == 1, recs
    rec = records.load_record(recs[0], root=recs[0].parents[4])
    assert rec["scale"] == "paper"
    assert rec["provenance"]["world_size"] == world
    assert rec["time"]["steps"] == steps
    return rec


@pytest.mark.parametrize("ranks", [1, 2])
def test_swin_t_on_imagenet_folders(tmp_path, synthetic_imagenet, ranks):
    # 8 train images (one grayscale, one CMYK JPEG) in batches of 4: 2 steps of the full
    # Swin-T (1000 classes) at 224 px with the official augmentation; 4 val images.
    out, recs = launch(tmp_path, ranks, "task=swin", "optim=solo_4_2bit",
                       f"task.data_dir={synthetic_imagenet}", "task.workers=1",
                       "scale.batch_size=4", "scale.epochs=1")
    rec = the_record(out, recs, ranks, steps=2)
    assert 0 <= rec["metrics"]["top1"] <= rec["metrics"]["top5"] <= 100
    # Swin-T's 28.3M parameters in 4-bit/2-bit states: about 24 MB
    assert 20e6 < rec["memory"]["state_bytes"]["total"] < 30e6


@pytest.mark.parametrize("ranks", [1, 2])
def test_transformer_base_on_parallel_text(tmp_path, synthetic_wmt, ranks):
    # Batches of <= 96 padded tokens: several train batches, an odd number of validation
    # batches; Transformer-Base, joint BPE, beam-4 SacreBLEU on the 4 test sentences.
    out, recs = launch(tmp_path, ranks, "task=transformer", "optim=solo_4_2bit",
                       f"task.data_dir={synthetic_wmt}", "scale.epochs=1",
                       "scale.max_tokens=96", "scale.eval_every=1")
    assert out.returncode == 0, (out.stdout + out.stderr)[-4000:]
    rec = the_record(out, recs, ranks, steps=json.loads(recs[0].read_text())["time"]["steps"])
    assert 1 <= rec["time"]["steps"] <= 6
    m = rec["metrics"]
    assert m["bleu_sentences"] == 4 and 0 <= m["bleu"] <= 100 and m["valid_loss"] > 0
    hyps = (tmp_path / "run" / "test_hypotheses.txt").read_text(encoding="utf-8")
    assert len(hyps.splitlines()) == 4


@pytest.mark.parametrize("ranks", [1, 2])
def test_dcn_on_the_criteo_tsv(tmp_path, synthetic_criteo, ranks):
    # 140 rows: 120 train (first six sevenths) in batches of 60 for one epoch (the recipe's
    # two would be 4 steps), val and test 10 each.
    out, recs = launch(tmp_path, ranks, "task=dcn", "optim=solo_4_2bit",
                       f"task.data_dir={synthetic_criteo}", "scale.batch_size=60", "scale.epochs=1",
                       "scale.eval_batch_size=4")
    rec = the_record(out, recs, ranks, steps=2)
    m = rec["metrics"]
    assert 0 <= m["auc"] <= 100 and m["logloss"] > 0 and 0 <= m["val_auc"] <= 100
    # the preprocessed cache, written once (by rank 0 alone under torchrun)
    assert (synthetic_criteo.parent / "train_dcn_min10" / "done").exists()


LLAMA = ["task=llama", "scale.batch_size=2", "scale.micro_batch_size=1", "scale.epochs=1",
         "scale.eval.batch_size=8"]


@pytest.mark.parametrize("ranks,optim", [(1, "solo_4_2bit"), (2, "torch_adamw"),
                                         (2, "solo_4_2bit")])
def test_llama_checkpoint_alpaca_and_lm_eval(tmp_path, synthetic_llama, synthetic_lm_eval,
                                             ranks, optim):
    # A tiny LlamaForCausalLM + SentencePiece tokenizer, 4 Alpaca records in global batches of
    # 2 (2 steps), then lm-eval on the five prepared benchmarks. 2 ranks: FSDP2 (fully_shard).
    model, alpaca = synthetic_llama
    out, recs = launch(tmp_path, ranks, *LLAMA, f"optim={optim}", f"task.model_path={model}",
                       f"task.data_path={alpaca}", f"task.lm_eval_dir={synthetic_lm_eval}")
    rec = the_record(out, recs, ranks, steps=2)
    for key in ("mmlu", "arc_e", "arc_c", "obqa", "siqa"):
        assert 0 <= rec["metrics"][key] <= 100, key
    assert (tmp_path / "run" / "model" / "config.json").exists()
    if ranks > 1:  # FSDP2: the record holds the whole model's state bytes, summed over ranks
        rank0 = rec["memory"]["state_bytes_this_rank"]["total"]
        assert rank0 < rec["memory"]["state_bytes"]["total"] <= ranks * rank0 + 4096
