"""The record schema: what the runners write is what every reader accepts, and nothing else."""

import copy
import json
import math
import os
import stat

import pytest
from harness_utils import ROOT
from omegaconf import open_dict

from experiments import records
from experiments.config import compose
from experiments.records import RecordError

FIXTURE = ROOT / "tests" / "harness" / "fixtures" / "records" / "small" / "swin" / "adamw32"


def _record():
    return json.loads((FIXTURE / "seed0.json").read_text())


def test_every_committed_record_and_crash_note_loads():
    # The tables' source: results/runs (cells, ablation variants, crash notes) and the e2e runs.
    root = ROOT / "results" / "runs"
    runs = records.load_records(root, variants=True, crash_notes=True)
    assert len(runs) == len(list(root.glob("**/*seed*.json"))) >= 60
    assert sum("crashed_at_step" in r for r in runs) >= 2
    assert sum(r["variant"] is not None for r in runs) >= 20
    for folder in sorted((ROOT / "results" / "bench" / "e2e").glob("rep*")):
        assert len(records.load_records(folder)) >= 2


@pytest.mark.parametrize("mutate, message", [
    (lambda r: r.pop("memory"), "missing key(s) memory"),
    (lambda r: r.update(seed=True), "seed must be integer"),
    (lambda r: r.update(seed=-1), "seed >= 0"),
    (lambda r: r.update(task=""), "must be non-empty"),
    (lambda r: r["metrics"].update(top1="81.2%"), "metrics.top1 must be a finite number"),
    (lambda r: r["metrics"].update(top1=math.nan), "metrics.top1 must be a finite number"),
    (lambda r: r["time"].pop("wall_s"), "missing key time.wall_s"),
    (lambda r: r["time"].update(steps=1.5), "time.steps must be integer"),
    (lambda r: r["provenance"].update(world_size="2"), "provenance.world_size must be integer"),
    (lambda r: r["memory"]["state_bytes"].update(total=1), "must equal quantized + full_prec"),
    (lambda r: r["memory"]["state_bytes"].pop("quantized"), "state_bytes.quantized must be"),
])
def test_validate_names_the_bad_field(mutate, message):
    rec = _record()
    assert records.validate(copy.deepcopy(rec)) == rec
    mutate(rec)
    with pytest.raises(RecordError, match=None) as err:
        records.validate(rec)
    assert message in str(err.value)


def test_extra_keys_are_allowed_in_every_section():
    rec = _record()
    for section in ("metrics", "memory", "time", "provenance"):
        rec[section]["added_later"] = 1
    rec["provenance"]["per_rank_seeds"] = [0, 1]
    records.validate(rec)


def test_a_crash_note_is_validated_as_one(tmp_path):
    note = {k: v for k, v in _record().items() if k not in ("metrics", "memory", "time")}
    note.update(variant="beta1=0.9", crashed_at_step=27, loss="nan")
    path = tmp_path / "small" / "swin" / "adamw32" / "beta1=0.9" / "crash-seed0.json"
    records.write_json_atomic(path, note)
    assert records.load_record(path, tmp_path)["crashed_at_step"] == 27
    del note["crashed_at_step"]
    records.write_json_atomic(path, note)
    with pytest.raises(RecordError, match="missing key.*crashed_at_step"):
        records.load_record(path)


@pytest.mark.parametrize("content, message", [
    ("{not json", "not valid JSON"), ("[]", "top level must be a JSON object"),
    ("WRONG_PLACE", "record says small/swin/solo_2bit/seed0.json but lies at")])
def test_load_names_the_file(tmp_path, content, message):
    path = tmp_path / "small" / "swin" / "adamw32" / "seed0.json"
    path.parent.mkdir(parents=True)
    if content == "WRONG_PLACE":
        content = json.dumps({**_record(), "optim": "solo_2bit"})
    path.write_text(content)
    with pytest.raises(RecordError) as err:
        records.load_records(tmp_path)
    assert str(err.value).startswith(str(path)) and message in str(err.value)


def test_what_make_record_builds_round_trips_through_the_reader(tmp_path):
    cfg = compose(["task=swin", "optim=solo_4_2bit", "scale=smoke", "seed=3"])
    with open_dict(cfg):
        cfg.records_dir = str(tmp_path)
    rec = records.make_record(cfg, {"top1": 50.0, "train_loss": None},
                              {"state_bytes": {"total": 3, "quantized": 2, "full_precision": 1},
                               "peak_bytes": 10, "peak_kind": "rss"},
                              {"wall_s": 1.0, "steps": 4}, replica_diff=0.0)
    path = records.record_path(cfg)
    records.write_record(path, rec)
    assert records.load_records(tmp_path) == [json.loads(json.dumps(rec))]
    with pytest.raises(RecordError, match="metrics.top1 must be a finite number"):
        records.make_record(cfg, {"top1": math.inf}, rec["memory"], rec["time"])


def test_a_crash_note_made_for_a_run_lies_where_the_readers_look(tmp_path):
    cfg = compose(["task=dcn", "optim=solo_2bit", "scale=smoke", "beta1=0.9"])
    with open_dict(cfg):
        cfg.records_dir = str(tmp_path)
    path = records.crash_note_path(cfg)
    records.write_json_atomic(path, records.make_crash_note(cfg, 27, float("nan")))
    (note,) = records.load_records(tmp_path, variants=True, crash_notes=True)
    assert (note["crashed_at_step"], note["loss"], note["variant"]) == (27, "nan", "beta1=0.9")
    assert records.load_records(tmp_path, variants=True) == []  # not a table cell


def test_write_record_refuses_a_malformed_record_and_writes_nothing(tmp_path):
    rec = _record()
    rec["metrics"]["top1"] = None
    rec["memory"]["state_bytes"]["total"] = -1
    path = tmp_path / "seed0.json"
    with pytest.raises(RecordError, match=f"{path}: not written.*state_bytes.total"):
        records.write_record(path, rec)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)])
def test_records_are_as_readable_as_any_new_file(tmp_path, umask, mode):
    # mkstemp made every record 0600: unreadable by the group sharing a result folder.
    old = os.umask(umask)
    try:
        records.write_json_atomic(tmp_path / "a" / "seed0.json", _record())
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "a" / "seed0.json").stat().st_mode) == mode
    assert [p.name for p in (tmp_path / "a").iterdir()] == ["seed0.json"]  # no temporary left
