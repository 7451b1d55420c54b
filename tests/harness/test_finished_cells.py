"""A finished cell is never trained again silently: its record is checked, not only its run
folder, and replacing it takes ``overwrite=true``. Swin at smoke scale (seconds a run)."""

import json

import pytest

from experiments import errors


def record_of(tmp_path):
    paths = list((tmp_path / "records").rglob("seed0.json"))
    assert len(paths) == 1, paths
    return paths[0]


def test_a_moved_run_folder_does_not_retrain_a_finished_cell(run_smoke, tmp_path):
    run_smoke(optim="adamw32")
    path = record_of(tmp_path)
    before = path.read_bytes()
    with pytest.raises(errors.RecordExists) as err:
        run_smoke(optim="adamw32", run_dir="moved")
    assert str(path) in str(err.value) and "overwrite=true" in str(err.value)
    assert path.read_bytes() == before and not (tmp_path / "moved").exists()


def test_moved_outputs_are_refused_and_overwrite_replaces_the_record(cli, tmp_path,
                                                                      monkeypatch):
    assert cli(run_dir=None)[0] == 0
    path = record_of(tmp_path)
    before = path.read_bytes()
    monkeypatch.setenv("SOLO_OUTPUTS_DIR", str(tmp_path / "outputs2"))
    for where in ({"run_dir": None}, {"run_dir": tmp_path / "moved"}):  # env, hydra.run.dir
        code, out = cli(**where)
        assert isinstance(code, str) and code.startswith(f"error: record {path} exists"), code
        assert "overwrite=true" in code and "Traceback" not in out
        assert path.read_bytes() == before
        assert not (tmp_path / "outputs2").exists() and not (tmp_path / "moved").exists()
    assert cli("overwrite=true", run_dir=None)[0] == 0
    replaced = json.loads(path.read_text())
    assert replaced["config"]["overwrite"] is True and (tmp_path / "outputs2").is_dir()
    assert replaced["metrics"] == json.loads(before)["metrics"]  # the same cell, retrained


def test_resume_never_needs_overwrite_to_replace_a_record(run_smoke, tmp_path):
    first, run_dir = run_smoke(optim="adamw32")
    path = record_of(tmp_path)
    before = path.read_bytes()
    with pytest.raises(errors.RecordExists, match="resume=never .* overwrite=true"):
        run_smoke("resume=never", optim="adamw32")
    assert path.read_bytes() == before
    again, _ = run_smoke("resume=never", "overwrite=true", optim="adamw32")
    assert json.loads(path.read_text())["config"]["overwrite"] is True
    assert again["metrics"] == first["metrics"]  # trained again from step 1, same numbers
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "loss" in r] == list(range(1, first["time"]["steps"] + 1))


def test_rerunning_the_finished_folder_still_leaves_the_record(run_smoke, tmp_path):
    first, _ = run_smoke(optim="adamw32")
    before = record_of(tmp_path).read_bytes()
    assert run_smoke(optim="adamw32")[0] == first
    assert record_of(tmp_path).read_bytes() == before
