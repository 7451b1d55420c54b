"""Human-written instructions with their responses for llama's medium scale: the first turn
of ShareGPT conversations (people's own ChatGPT prompts, shared on sharegpt.com, and ChatGPT's
answers; the data Vicuna was trained on), extracted once by scripts/get_instructions.sh into a
cleaned JSONL of Alpaca-format pairs, then split and length-filtered here at run time.

Run `python -m experiments.llama.sharegpt SRC DEST` to extract (what the fetch script does).
"""

import hashlib
import json
import os
import sys
from pathlib import Path

from experiments.datacheck import BadData, require_file

FETCH = "scripts/get_instructions.sh"
DEFAULT_PATH = "data/cache/sharegpt/pairs.jsonl"
# A generous bound on prompt + response characters, so the JSONL stays small; the exact bound
# is the recipe's max_len in tokens, checked at run time (select).
MAX_CHARS = 4000
MIN_INSTRUCTION_CHARS = 12  # "hi", "continue", "thanks": not instructions
# Frequent English words that are not also frequent words of the other languages ShareGPT
# holds (Spanish "a", "no", French "on" are left out), for english_looking.
ENGLISH_WORDS = frozenset(
    "the and of to is in that it for you with are this be as your can or an what how have "
    "will not from by at my we they was which would do if about there their these should "
    "has been more some when also like it's i'm".split())


def records(text: str):
    """Each complete record of the JSON list `text`, in order, decoded one at a time; a record
    cut off by the end of the text (the wheel's copy stops mid-record) ends the list. Yields
    (record, offset in characters after it), so the caller can say how much was left."""
    decoder = json.JSONDecoder()
    i = text.index("[") + 1
    while True:
        while i < len(text) and text[i] in " \t\r\n,":
            i += 1
        if i >= len(text) or text[i] == "]":
            return
        try:
            record, i = decoder.raw_decode(text, i)
        except json.JSONDecodeError:
            return
        yield record, i


def first_turn(record: dict) -> dict | None:
    """The conversation's opening human -> assistant exchange as {id, instruction, input,
    output}, or None. Only a conversation's first part (id ending "_0"): ShareGPT split long
    conversations into parts, and a later part opens mid-dialogue ("continue")."""
    conv = record.get("conversations") or []
    if not str(record.get("id", "")).endswith("_0") or len(conv) < 2:
        return None
    if conv[0].get("from") != "human" or conv[1].get("from") != "gpt":
        return None
    instruction, output = str(conv[0].get("value", "")).strip(), str(conv[1].get("value", "")
                                                                        ).strip()
    return {"id": record["id"], "instruction": instruction, "input": "", "output": output}


def english_looking(text: str, min_ascii: float = 0.98, min_words: float = 0.12) -> bool:
    """True when nearly all letters are ASCII and frequent English words make up at least
    `min_words` of the words (other Latin-script languages score far lower)."""
    letters = [c for c in text if c.isalpha()]
    if not letters or sum(c.isascii() for c in letters) < min_ascii * len(letters):
        return False
    words = [w.strip(".,;:!?()\"'").lower() for w in text.split()]
    return sum(w in ENGLISH_WORDS for w in words) >= min_words * len(words)


def clean(turns) -> list[dict]:
    """Keep English-looking pairs of reasonable size, the first of each instruction (compared
    lower-cased, whitespace collapsed)."""
    seen, kept = set(), []
    for ex in turns:
        if ex is None or len(ex["instruction"]) < MIN_INSTRUCTION_CHARS:
            continue
        if not any(c.isalnum() for c in ex["output"]):  # empty, or a lone zero-width space
            continue
        if len(ex["instruction"]) + len(ex["output"]) > MAX_CHARS:
            continue
        if not english_looking(ex["instruction"] + "\n" + ex["output"]):
            continue
        key = " ".join(ex["instruction"].lower().split())
        if key not in seen:
            seen.add(key)
            kept.append(ex)
    return kept


def extract(src: Path, dest: Path) -> dict:
    """Write the cleaned first turns of ShareGPT's JSON `src` to the JSONL `dest` (atomically:
    a temporary file renamed); returns counts for the log."""
    text = Path(src).read_text(encoding="utf-8")
    n, end, turns = 0, 0, []
    for record, stop in records(text):
        n, end = n + 1, stop  # where the last whole record stops
        turns.append(first_turn(record))
    pairs = clean(turns)
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_suffix(".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        for ex in pairs:
            f.write(json.dumps(ex, ensure_ascii=False) + "\n")
    os.replace(tmp, dest)
    return {"records": n, "first_turns": sum(t is not None for t in turns), "pairs": len(pairs),
            "chars_left": len(text) - end}


def load(path: Path) -> list[dict]:
    """The extracted pairs, in a fixed order that depends on their ids alone (sha256), never on
    the file's order or a run's seed. DataNotFound names the fetch script."""
    path = require_file(path, "ShareGPT instruction pairs", f"fetch them with `{FETCH}` "
                        "(`make setup` does)")
    with open(path, encoding="utf-8") as f:
        pairs = [json.loads(line) for line in f if line.strip()]
    return sorted(pairs, key=lambda ex: hashlib.sha256(ex["id"].encode()).hexdigest())


def select(pairs: list[dict], n_train: int, n_heldout: int, fits) -> tuple[list, list]:
    """(train, heldout): in load's fixed order, the pairs for which fits(pair) holds (the whole
    chat-formatted example fits the recipe's max_len: responses are never cut), the first
    n_heldout held out, the next n_train for training. Disjoint; fixed by the recipe."""
    chosen = []
    for ex in pairs:
        if len(chosen) == n_heldout + n_train:
            break
        if fits(ex):
            chosen.append(ex)
    if len(chosen) < n_heldout + n_train:
        raise BadData(f"only {len(chosen)} of {len(pairs)} instruction pairs fit max_len; "
                      f"the recipe asks {n_heldout} held out + {n_train} for training: lower "
                      "scale.n_train or raise scale.max_len")
    return chosen[n_heldout:], chosen[:n_heldout]


if __name__ == "__main__":
    print(json.dumps(extract(Path(sys.argv[1]), Path(sys.argv[2]))))
