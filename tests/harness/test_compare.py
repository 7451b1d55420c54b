"""The block a finished run prints (experiments/compare.py): its main metric beside the
committed record of its cell, that cell's seeds and the paper's number; a run that replaced
the committed record is told so; missing git or results/paper never fail a run."""

import json
import subprocess
from pathlib import Path

import pytest
import yaml
from harness_utils import ROOT

from experiments import compare, validate
from experiments.config import compose
from experiments.errors import ConfigError

FIXTURE = Path(__file__).parent / "fixtures/records/small/swin/adamw32/seed0.json"
CELL = Path("results/runs/small/swin/adamw32")


def fixture_record(scale="small", seed=0, top1=50.0, sha="abc1234def", dirty=False):
    """A valid swin adamw32 record of ``scale`` and ``seed`` with this top1 and provenance."""
    rec = json.loads(FIXTURE.read_text())
    rec.update(scale=scale, seed=seed, metrics={**rec["metrics"], "top1": top1})
    rec["provenance"].update(git_sha=sha, git_dirty=dirty)
    rec["config"]["task"]["main_metric"] = "top1"
    return rec


def write(root, rel, rec):
    (root / rel).parent.mkdir(parents=True, exist_ok=True)
    (root / rel).write_text(json.dumps(rec))


@pytest.mark.parametrize("path", sorted((ROOT / "conf/task").glob("*.yaml")),
                         ids=lambda p: p.stem)
def test_every_task_declares_a_main_metric_that_a_paper_table_shows(path):
    metric = yaml.safe_load(path.read_text())["main_metric"]
    assert compare.paper_column(path.stem, metric), f"{path.stem}: {metric} has no paper column"
    with pytest.raises(ConfigError, match="task.main_metric=top 1 is not allowed"):
        validate.check_config(compose([f"task={path.stem}", "task.main_metric='top 1'"]))


def test_a_smoke_run_prints_the_block(run_smoke, capsys):
    run_smoke(optim="adamw32")
    out = capsys.readouterr().out
    assert "reproduction check: smoke/swin/adamw32/seed0 (main metric: top1)" in out
    assert "committed        no committed record for this cell and seed" in out
    assert "paper            81.16   Table 1 (SOLO" in out and "row '32-bit AdamW'" in out
    assert "not comparable in value with scale=smoke" in out


def test_a_run_shows_the_committed_record_and_its_seeds(run_smoke, capsys, tmp_path,
                                                        monkeypatch):
    root = tmp_path / "checkout"
    (root / "results").mkdir(parents=True)
    (root / "results/paper").symlink_to(ROOT / "results/paper")
    cell = Path("results/runs/smoke/swin/adamw32")
    for seed, top1 in ((0, 50.0), (1, 52.0), (2, 54.0)):
        write(root, cell / f"seed{seed}.json",
              fixture_record("smoke", seed, top1, dirty=seed == 0))
    monkeypatch.setattr(compare, "ROOT", root)
    record, _ = run_smoke(optim="adamw32")
    out = capsys.readouterr().out
    ours = record["metrics"]["top1"]
    assert (f"committed        50.00   {cell}/seed0.json (commit abc1234, dirty); this run - "
            f"committed = {ours - 50:+.2f}") in out
    assert "committed seeds  52.00 ± 2.00 (mean ± std, n=3)" in out
    assert "replaced" not in out


@pytest.fixture
def repo(tmp_path):
    """A git checkout with two committed records of small/swin/adamw32, no results/paper."""
    def git(*args):
        subprocess.run(["git", "-C", str(tmp_path), *args], check=True, capture_output=True)

    git("init", "-q")
    write(tmp_path, CELL / "seed0.json", fixture_record(top1=96.6, sha="c0ffee0"))
    write(tmp_path, CELL / "seed1.json", fixture_record(seed=1, top1=97.4, sha="c0ffee0"))
    git("add", "-A")
    git("-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "records")
    return tmp_path


def test_a_run_that_replaced_the_committed_record_compares_with_git_head(repo):
    new = fixture_record(top1=90.0, sha="feedbee")
    write(repo, CELL / "seed0.json", new)  # what a run with records_dir=results/runs does
    out = compare.report(new, repo / CELL / "seed0.json", root=repo)
    assert (f"committed        96.60   git HEAD:{CELL}/seed0.json (commit c0ffee0, clean); "
            "this run - committed = -6.60") in out
    assert "committed seeds  97.00 ± 0.57 (mean ± std, n=2)" in out  # HEAD's, not this run's
    assert (f"NOTE: this run replaced the committed record {CELL}/seed0.json; restore it with "
            f"`git checkout -- {CELL}/seed0.json`") in out
    assert "paper            — (cannot read results/paper" in out


def test_no_git_and_no_paper_never_fail_a_run(repo, monkeypatch, capsys, caplog):
    new = fixture_record(seed=5, top1=90.0)
    write(repo, CELL / "seed5.json", new)
    monkeypatch.setenv("PATH", str(repo / "no-such-bin"))  # no git to run
    out = compare.report(new, repo / CELL / "seed5.json", root=repo)
    assert "no committed record (git HEAD has none, or git cannot be read)" in out
    assert "committed seeds" not in out and "cannot read results/paper" in out
    assert "replaced" not in out  # nothing in HEAD to restore

    def broken(*args):
        raise ImportError("no scripts/ here")

    monkeypatch.setattr(compare, "_layouts", broken)
    compare.print_report(new, repo / CELL / "seed5.json")  # a warning, not an exception
    assert capsys.readouterr().out == ""
    assert "reproduction check skipped (ImportError: no scripts/ here)" in caplog.text
