"""The transformer (translation) runner: Ding parsing, batching, beam search, and smoke runs
end to end (a record with BLEU, exact resume)."""

import json
import math
from pathlib import Path

import pytest
import torch
from harness_utils import SOLO_OPTIM

from experiments import checkpoint, errors
from experiments.config import compose
from experiments.transformer import data as td
from experiments.transformer import model as seq2seq
from experiments.transformer import run as transformer_run

DING_SAMPLE = """\
# Version :: devel 2023-01-30
Ernst {m} | Ist das Ihr Ernst? | Das ist mein voller Ernst! :: seriousness | Are you serious? | I'm dead serious!
Hund {m} | Hunde {pl} | Der Hund bellt laut. :: dog | dogs | The dog barks loudly.
Haus {n} | Das Haus ist sehr alt. :: house | houses | The house is very old.
Katze {f} | Die Katze schläft [ugs.] gern. :: cat | The cat likes to sleep.
Baum {m} | Der Baum ist grün :: tree | The tree is green
Hund {m} | Hunde {pl} | Der Hund bellt laut. :: dog | dogs | The dog barks loudly.
"""


@pytest.fixture
def run_tr(tmp_path, monkeypatch, one_thread):
    """Run the transformer runner in-process (smoke scale unless told); returns
    (record or None, run_dir)."""
    monkeypatch.setenv("WANDB_MODE", "offline")

    def go(*overrides, run_dir="run", records="records", optim=SOLO_OPTIM, scale="smoke"):
        from omegaconf import open_dict

        cfg = compose(["task=transformer", f"scale={scale}", f"optim={optim}", "logger=none",
                       *overrides])
        with open_dict(cfg):
            cfg.run_dir = str(tmp_path / run_dir)
            cfg.records_dir = str(tmp_path / records)
        return transformer_run.main(cfg), Path(cfg.run_dir)

    return go


def history(run_dir: Path) -> dict[int, dict]:
    rows = {}
    for line in (run_dir / "metrics.jsonl").read_text().splitlines():
        row = json.loads(line)
        rows.setdefault(row["step"], {}).update(row)
    return rows


# ---------------------------------------------------------------- data


def test_ding_parsing_aligns_parts_keeps_full_sentences_and_dedupes():
    pairs = td.parse_ding(DING_SAMPLE.splitlines(keepends=True))
    # The Haus line's sides have 2 and 3 parts (unaligned); "Baum" lacks final punctuation;
    # the repeated Hund line adds nothing; 4+ words counts on the German side only.
    assert pairs == [
        ("Ist das Ihr Ernst?", "Are you serious?"),
        ("Das ist mein voller Ernst!", "I'm dead serious!"),
        ("Der Hund bellt laut.", "The dog barks loudly."),
        ("Die Katze schläft gern.", "The cat likes to sleep."),  # [ugs.] dropped
    ]


@pytest.mark.skipif(not td.DING_PATH.exists(), reason="trans-de-en not installed")
def test_ding_split_is_fixed_and_disjoint():
    a = td.load_ding()  # one read: the split depends on DING_SPLIT_SEED only, not the run
    assert (len(a["valid"]), len(a["test"])) == (1000, 1000) and len(a["train"]) > 15000
    assert not set(a["test"]) & set(a["train"]) and not set(a["valid"]) & set(a["train"])


def test_missing_ding_file_names_the_path_and_the_fix(tmp_path):
    with pytest.raises(errors.DataNotFound) as err:
        td.load_ding(tmp_path / "de-en")
    assert str(tmp_path / "de-en") in str(err.value) and "apt-get install trans-de-en" in str(
        err.value)


def test_missing_parallel_folder_names_the_path(run_tr, tmp_path):
    with pytest.raises(errors.DataNotFound, match="train.src"):
        run_tr(f"task.data_dir={tmp_path}", scale="paper")


def test_token_batches_respect_the_budget_and_cover_every_pair():
    g = torch.Generator().manual_seed(0)
    lengths = torch.randint(1, 40, (500,), generator=g).tolist()
    batches = td.token_batches(lengths, max_tokens=100)
    assert sorted(i for b in batches for i in b) == list(range(500))
    for b in batches:
        assert len(b) * max(lengths[i] for i in b) <= 100
    # a pair longer than the budget still gets a batch of its own
    assert td.token_batches([5, 300], max_tokens=100) == [[0], [1]]


def test_bpe_round_trips_text_and_is_cached(tmp_path):
    pairs = td.synthetic(50, 0, 0)["train"] + [("Das ist gut.", "That is good.")]
    tok = td.train_bpe(pairs, 40, tmp_path)
    assert len(list(tmp_path.glob("bpe-40-*/bpe.json"))) == 1
    assert tok.decode(tok.encode("Das ist gut.").ids) == "Das ist gut."
    again = td.train_bpe(pairs, 40, tmp_path)
    assert again.to_str() == tok.to_str()


# ---------------------------------------------------------------- decoding


def test_beam_one_equals_greedy_on_a_random_model(one_thread):
    torch.manual_seed(0)
    model = seq2seq.Seq2Seq(30, d_model=16, ffn=32, heads=2, enc_layers=1, dec_layers=1,
                            dropout=0.0, norm_first=True).eval()
    src = torch.randint(3, 30, (12, 7))
    src[::3, 5:] = seq2seq.PAD
    with torch.no_grad():  # tilt the output towards EOS so that some outputs stop early
        eos = model.embed.weight[seq2seq.EOS]
        model.decoder.norm.bias.copy_(2.5 * eos / eos.norm() ** 2)
    greedy = seq2seq.greedy(model, src, max_len=10)
    assert seq2seq.beam_search(model, src, beam=1, max_len=10, alpha=0.6) == greedy
    assert any(len(g) < 10 for g in greedy) and any(len(g) == 10 for g in greedy)
    wide = seq2seq.beam_search(model, src, beam=4, max_len=10, alpha=0.6)
    assert len(wide) == 12 and all(seq2seq.EOS not in h for h in wide)


@pytest.mark.parametrize("norm_first", [True, False])
def test_incremental_decoder_gives_the_full_decoders_logits(one_thread, norm_first):
    """The KV-cached decoder beam search uses gives, step by step, the logits of decoding the
    whole prefix again: pre-norm and post-norm, padded sources, a PAD in the prefix, and
    hypotheses reordered within their sentence (2 beams per sentence) between steps."""
    torch.manual_seed(1)
    model = seq2seq.Seq2Seq(30, d_model=16, ffn=32, heads=2, enc_layers=1, dec_layers=2,
                            dropout=0.3, norm_first=norm_first).eval()
    src = torch.randint(3, 30, (3, 7))
    src[1, 4:] = seq2seq.PAD
    prefix = torch.cat([torch.full((6, 1), seq2seq.BOS), torch.randint(3, 30, (6, 5))], 1)
    prefix[0, 2] = seq2seq.PAD  # masked as a key by both
    origin = torch.arange(6)  # the row of `prefix` each hypothesis continues
    with torch.no_grad():
        memory, src_pad = model.encode(src.repeat_interleave(2, 0))
        decoder = seq2seq.IncrementalDecoder(model, memory, src_pad)
        for t in range(prefix.size(1)):
            step = decoder.step(prefix[origin, t])
            full = model.decode(prefix[origin, : t + 1], memory, src_pad)[:, -1]
            torch.testing.assert_close(step, full, atol=1e-5, rtol=1e-5)
            if t in (1, 3):
                rows = torch.tensor([0, 0, 3, 2, 5, 4] if t == 1 else [1, 1, 2, 3, 4, 4])
                decoder.reorder(rows)
                origin = origin[rows]


# ---------------------------------------------------------------- runs


def test_smoke_run_writes_a_record_with_bleu_and_hypotheses(run_tr, tmp_path):
    record, run_dir = run_tr("seed=2", optim="adamw32")
    path = tmp_path / "records" / "smoke" / "transformer" / "adamw32" / "seed2.json"
    assert json.loads(path.read_text())["metrics"] == record["metrics"]
    assert (record["task"], record["optim"], record["scale"], record["seed"]) == (
        "transformer", "adamw32", "smoke", 2)
    m = record["metrics"]
    assert {"bleu", "copy_bleu", "valid_loss", "valid_ppl", "train_loss"} <= set(m)
    assert 0 <= m["bleu"] <= 100 and 0 < m["copy_bleu"] <= 100
    assert m["valid_ppl"] == pytest.approx(math.exp(m["valid_loss"]))
    assert record["time"]["throughput_unit"] == "target tokens/s"
    assert record["time"]["throughput"] > 0 and record["memory"]["state_bytes"]["total"] > 0
    hyps = (run_dir / "test_hypotheses.txt").read_text().splitlines()
    assert len(hyps) == m["bleu_sentences"] == 16
    assert [row["step"] for row in map(json.loads, (run_dir / "metrics.jsonl").open())
            if "loss" in row] == list(range(1, record["time"]["steps"] + 1))


def test_resume_is_bit_identical_to_an_uninterrupted_run(run_tr):
    straight, straight_dir = run_tr(run_dir="straight", records="rec_straight")
    n = straight["time"]["steps"]
    stopped, resumed_dir = run_tr(f"stop_at_step={n // 2 + 1}", run_dir="resumed",
                                  records="rec_resumed")
    assert stopped is None and not (resumed_dir.parent / "rec_resumed").exists()
    assert checkpoint.load(resumed_dir / "ckpt.pt")["step"] == n // 2 + 1
    resumed, _ = run_tr(run_dir="resumed", records="rec_resumed")

    a, b = history(straight_dir), history(resumed_dir)
    assert [a[s]["loss"] for s in range(1, n + 1)] == [b[s]["loss"] for s in range(1, n + 1)]
    pa = checkpoint.load(straight_dir / "ckpt.pt")["model"]
    pb = checkpoint.load(resumed_dir / "ckpt.pt")["model"]
    assert all(torch.equal(pa[k], pb[k]) for k in pa)
    assert straight["metrics"] == resumed["metrics"]


def test_nonfinite_loss_stops_with_crash_checkpoint_and_no_record(run_tr, tmp_path):
    with pytest.raises(errors.NonFiniteLoss, match=r"at step \d+"):
        run_tr("scale.lr=1e30", optim="torch_adamw")
    assert (tmp_path / "run" / "crash.pt").exists()
    assert not list((tmp_path / "records").rglob("seed*.json"))  # no record, a crash note
    assert len(list((tmp_path / "records").rglob("crash-seed*.json"))) == 1


@pytest.mark.slow
def test_small_scale_adamw32_beats_the_copy_baseline(run_tr):
    """The first half of the small recipe (4 of its 8 epochs, seed 0; the inverse-sqrt schedule
    does not depend on the length, so these are the whole recipe's first 1152 steps) already
    translates several times better than copying the source, BLEU on the whole 1000-sentence
    test split.

    Measured (adamw32, one thread, seed 0): BLEU 1.96 against copy 0.22, valid_ppl 89.5 (the
    whole recipe: BLEU 3.92, ppl 60.7; 2 epochs in: BLEU 0.49, ppl 159). The earlier recipe
    (dropout 0.1) gave BLEU 1.9-2.6 after 4 epochs over seeds 0-2, a spread the bars allow for:
    BLEU >= copy + 1.0 (1.22), ppl <= 100. About 7 minutes on an uncontended core (~0.3 s a
    step, 20 s of KV-cached beam search)."""
    record, _ = run_tr("scale.epochs=4", scale="small", optim="adamw32")
    m = record["metrics"]
    assert record["time"]["steps"] == 1152 and m["bleu_sentences"] == 1000, record["time"]
    assert m["bleu"] >= m["copy_bleu"] + 1.0, m
    assert m["valid_ppl"] <= 100, m
