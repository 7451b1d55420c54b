"""Recipe fidelity across GPU counts in the runners: the global batch is the same for any
world size and micro-batch, every rank takes the same number of micro-batches per step, and
the record says how the batch was split. Also the recipe rules taken from the papers (DCN's
embedding size, Alpaca's pad token). The accumulation maths: test_batching.py."""

import json
from pathlib import Path

import pytest
import torch

from experiments.config import compose
from experiments.dcn import model as dcn_model
from experiments.dcn import run as dcn_run
from experiments.errors import ConfigError
from experiments.llama import data as llama_data
from experiments.transformer import data as mt_data


def run_dcn(tmp_path, name, *overrides):
    from omegaconf import open_dict

    cfg = compose(["task=dcn", "scale=smoke", "optim=adamw32", "logger=none", *overrides])
    with open_dict(cfg):
        cfg.run_dir = str(tmp_path / name)
        cfg.records_dir = str(tmp_path / f"{name}_records")
    return dcn_run.main(cfg)


def test_micro_batches_train_like_the_whole_batch_and_the_record_says_so(tmp_path):
    whole = run_dcn(tmp_path, "whole")
    split = run_dcn(tmp_path, "split", "+scale.micro_batch_size=8")
    assert whole["batch"] == {"global_batch": 32, "micro": 32, "accum": 1, "world": 1,
                              "unit": "samples"}
    assert split["batch"] == {"global_batch": 32, "micro": 8, "accum": 4, "world": 1,
                              "unit": "samples"}
    for key in ("auc", "logloss", "train_loss"):
        assert split["metrics"][key] == pytest.approx(whole["metrics"][key], rel=1e-4, abs=1e-5)
    on_disk = json.loads(next(Path(tmp_path / "split_records").rglob("seed0.json")).read_text())
    assert on_disk["batch"]["accum"] == 4


def test_a_global_batch_the_ranks_cannot_share_fails_before_training(tmp_path):
    # the config checks name the key before the runner plans the batch
    with pytest.raises(ConfigError, match=r"scale\.micro_batch_size=5 does not divide"):
        run_dcn(tmp_path, "bad", "+scale.micro_batch_size=5")


@pytest.mark.parametrize("world,accum", [(1, 1), (1, 4), (2, 2), (4, 1)])
def test_token_batches_give_every_rank_the_same_steps_and_micro_batches(world, accum):
    """The transformer's steps: world x accum token batches each, split by rank; every rank
    yields the same number of steps with `accum` micro-batches (no rank waits on another's
    collective) and counts the same global target tokens."""
    encoded = [([5] * (3 + i % 7), [6] * (2 + i % 5)) for i in range(101)]
    batches = mt_data.token_batches(mt_data.pair_lengths(encoded), 24)
    per_rank = [list(mt_data.train_batches(batches, 0, 0, 0, r, world, accum))
                for r in range(world)]
    steps = {len(p) for p in per_rank}
    assert steps == {len(batches) // (world * accum)}
    for s in range(len(per_rank[0])):
        everyone = per_rank[0][s][1]
        assert all(p[s][1] == everyone for p in per_rank)
        assert all(len(p[s][0]) == accum for p in per_rank)
        assert sorted(b for p in per_rank for b in p[s][0]) == sorted(everyone)
        tokens = sum(int((mt_data.collate(encoded, idx, "cpu")[2] != mt_data.PAD).sum())
                     for p in per_rank for idx in p[s][0])
        assert mt_data.target_tokens(encoded, everyone) == tokens


def test_llama_counts_the_global_batchs_loss_tokens_on_every_rank():
    encoded = [([1] * (4 + i % 5), [-100] * 3 + [7] * (1 + i % 5)) for i in range(40)]
    world, counted = 2, []
    for rank in range(world):
        micro, loss_tokens, input_tokens = llama_data.batches_of(1, 2, encoded, 16, 4, 0, rank,
                                                                 world)
        assert [len(m) for m in micro] == [4, 4]
        counted.append(sum(sum(t != -100 for t in y[1:]) for m in micro for _, y in m))
        everyone = llama_data.epoch_order(40, 0, 0)[16:32].tolist()  # step 1 of epoch 0
        assert loss_tokens == llama_data.label_tokens(encoded, everyone)
        assert input_tokens == sum(len(encoded[i][0]) for i in everyone)
    assert loss_tokens == sum(counted)


def test_dcn_embedding_size_follows_wang_et_al():
    dims = dcn_model.embedding_dims({"a": 1, "b": 10_000, "c": 1_000_000}, "auto")
    assert dims == {"a": 6, "b": 60, "c": 190}  # 6 x card^(1/4): 6, 60, 189.7
    assert dcn_model.embedding_dims({"a": 3}, 16) == {"a": 16}
    with pytest.raises(ValueError, match="positive int or 'auto'"):
        dcn_model.embedding_dims({"a": 3}, "six")
    model = dcn_model.DCN({"a": 10, "b": 10_000}, 2, "auto", 1, [8], batch_norm=True)
    assert model.cross_w.shape[1] == 2 + 11 + 60  # 6 x 10^(1/4) = 10.7 -> 11
    assert any(isinstance(m, torch.nn.BatchNorm1d) for m in model.deep)


def test_alpaca_pad_token_is_new_and_starts_at_the_mean_embedding(tmp_path):
    from transformers import LlamaConfig, LlamaForCausalLM

    from experiments.llama import model as llama_model

    tok = llama_data.train_tokenizer(["hello world", "a b c"] * 20, 300, tmp_path / "tok")
    tok.pad_token = None
    model = LlamaForCausalLM(LlamaConfig(vocab_size=len(tok), hidden_size=16,
                                         intermediate_size=32, num_hidden_layers=1,
                                         num_attention_heads=2, tie_word_embeddings=False))
    before = model.get_output_embeddings().weight.detach().clone()
    llama_model.add_pad_token(tok, model)
    assert tok.pad_token == "[PAD]" and tok.pad_token_id == len(tok) - 1
    assert tok.pad_token_id not in (tok.eos_token_id, tok.unk_token_id)
    for emb, old in ((model.get_output_embeddings(), before),
                     (model.get_input_embeddings(), None)):
        assert emb.weight.shape[0] == len(tok)
        torch.testing.assert_close(emb.weight[-1], emb.weight[:-1].mean(0))
        if old is not None:
            torch.testing.assert_close(emb.weight[:-1], old)
