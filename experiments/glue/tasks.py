"""The eight GLUE tasks at paper scale (Wang et al. 2019): where each one's train and dev data
are, how its rows become examples, and how it is scored. An example is (text_a, text_b or
None, label): an int class, or a float for STS-B's similarity score (0-5).

Two layouts under ``task.data_dir`` are read, per task, whichever is there:

- GLUE's own TSV release (``download_glue_data.py``): ``CoLA/train.tsv``, ``CoLA/dev.tsv``, ...,
  ``MNLI/dev_matched.tsv`` and ``dev_mismatched.tsv``; read with no quoting (the sentences hold
  bare quotes), CoLA without a header, the others by their header's column names.
- HF-saved folders (``datasets.load_dataset("glue", name).save_to_disk(DIR/name)``):
  ``cola/train``, ``cola/validation``, ..., ``mnli/validation_matched``, read with
  ``datasets.load_from_disk``.

Labels follow HF's ids (MNLI 0 entailment / 1 neutral / 2 contradiction; QNLI and RTE
0 entailment / 1 not_entailment), whichever layout they come from.
"""

import csv
import logging
import sys
from dataclasses import dataclass
from pathlib import Path

from experiments.datacheck import BadData
from experiments.errors import DataNotFound

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Task:
    """One GLUE task: its TSV folder, HF name, columns, label count (1: regression) and
    metric (``mcc``, ``acc``, ``f1_acc``, ``pearson_spearman``), and its dev splits as
    (record key, TSV file stem, HF split)."""

    name: str
    tsv_dir: str
    columns: tuple  # (text_a, text_b or None, label) in the TSV's header
    hf_columns: tuple  # the same in the HF dataset
    num_labels: int
    metric: str
    dev: tuple = (("", "dev", "validation"),)
    label_map: dict | None = None  # TSV label strings -> HF ids


NLI3 = {"entailment": 0, "neutral": 1, "contradiction": 2}
NLI2 = {"entailment": 0, "not_entailment": 1}

TASKS = {t.name: t for t in (
    # CoLA's TSVs have no header: source, label, original label, sentence (columns by index)
    Task("cola", "CoLA", (3, None, 1), ("sentence", None, "label"), 2, "mcc"),
    Task("sst2", "SST-2", ("sentence", None, "label"), ("sentence", None, "label"), 2, "acc"),
    Task("mrpc", "MRPC", ("#1 String", "#2 String", "Quality"),
         ("sentence1", "sentence2", "label"), 2, "f1_acc"),
    Task("stsb", "STS-B", ("sentence1", "sentence2", "score"),
         ("sentence1", "sentence2", "label"), 1, "pearson_spearman"),
    Task("qqp", "QQP", ("question1", "question2", "is_duplicate"),
         ("question1", "question2", "label"), 2, "f1_acc"),
    Task("mnli", "MNLI", ("sentence1", "sentence2", "gold_label"), ("premise", "hypothesis",
         "label"), 3, "acc", dev=(("", "dev_matched", "validation_matched"),
                                  ("_mm", "dev_mismatched", "validation_mismatched")),
         label_map=NLI3),
    Task("qnli", "QNLI", ("question", "sentence", "label"), ("question", "sentence", "label"),
         2, "acc", label_map=NLI2),
    Task("rte", "RTE", ("sentence1", "sentence2", "label"), ("sentence1", "sentence2", "label"),
         2, "acc", label_map=NLI2),
)}

FETCH = ("Get GLUE with `python download_glue_data.py --data_dir DIR --tasks all` (the GLUE "
         "benchmark's script, gluebenchmark.com) or, with the `datasets` package, "
         "`datasets.load_dataset('glue', NAME).save_to_disk('DIR/NAME')` for each task; then "
         "pass task.data_dir=DIR")


def read_tsv(path: Path, task: Task) -> list:
    """GLUE's TSV rows as examples; rows with too few fields (a handful in QQP's train) are
    skipped and counted, as GLUE's own loaders do."""
    csv.field_size_limit(sys.maxsize)
    a, b, y = task.columns
    with open(path, encoding="utf-8", newline="") as f:
        rows = csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        if isinstance(a, int):
            header, index = None, {a: a, b: b, y: y}
        else:
            header = next(rows, [])
            missing = [c for c in task.columns if c is not None and c not in header]
            if missing:
                raise BadData(f"{path}: no {missing[0]!r} column in its header "
                              f"({', '.join(header[:12])}); expected GLUE's {task.tsv_dir} TSV")
            index = {c: header.index(c) for c in task.columns if c is not None}
        need = max(i for i in index.values() if i is not None) + 1
        out, skipped = [], 0
        for row in rows:
            if len(row) < need:
                skipped += 1
                continue
            out.append((row[index[a]], row[index[b]] if b is not None else None,
                        label_of(row[index[y]], task, path)))
    if skipped:
        log.warning("%s: skipped %d rows with fewer than %d fields", path, skipped, need)
    return out


def label_of(value: str, task: Task, path):
    """A TSV label as its HF id (float for regression)."""
    try:
        if task.num_labels == 1:
            return float(value)
        return task.label_map[value] if task.label_map else int(value)
    except (KeyError, ValueError):
        raise BadData(f"{path}: label {value!r} is not one of {task.name}'s labels "
                      f"({sorted(task.label_map) if task.label_map else 'integers'})") from None


def read_hf(path: Path, task: Task) -> list:
    """An HF-saved split folder as examples."""
    import datasets

    ds = datasets.load_from_disk(str(path))
    a, b, y = task.hf_columns
    missing = [c for c in task.hf_columns if c is not None and c not in ds.column_names]
    if missing:
        raise BadData(f"{path}: no {missing[0]!r} column ({', '.join(ds.column_names)}); "
                      f"expected HF's glue/{task.name}")
    cast = float if task.num_labels == 1 else int
    return [(r[a], r[b] if b else None, cast(r[y])) for r in ds]


def load(data_dir, task: Task) -> tuple[list, dict]:
    """(train examples, {record key suffix: dev examples}) of one GLUE task from
    ``data_dir``; DataNotFound names the paths looked for and how to get them."""
    root = Path(data_dir) if data_dir else None
    if root is not None and (root / task.tsv_dir / "train.tsv").is_file():
        where = root / task.tsv_dir
        need = ["train", *(stem for _, stem, _ in task.dev)]
        absent = [where / f"{s}.tsv" for s in need if not (where / f"{s}.tsv").is_file()]
        if absent:
            raise DataNotFound(f"GLUE {task.name}: {absent[0]} is missing. {FETCH}.")
        return read_tsv(where / "train.tsv", task), {
            key: read_tsv(where / f"{stem}.tsv", task) for key, stem, _ in task.dev}
    if root is not None and (root / task.name / "train").is_dir():
        where = root / task.name
        absent = [where / s for _, _, s in task.dev if not (where / s).is_dir()]
        if absent:
            raise DataNotFound(f"GLUE {task.name}: {absent[0]} is missing. {FETCH}.")
        return read_hf(where / "train", task), {
            key: read_hf(where / split, task) for key, _, split in task.dev}
    looked = (f"{root / task.tsv_dir / 'train.tsv'} or {root / task.name / 'train'}/"
              if root else "task.data_dir=null")
    raise DataNotFound(f"GLUE {task.name} not found: {looked}. {FETCH}.")
