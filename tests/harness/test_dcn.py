"""The dcn runner: smoke run and record, resume, MovieLens parsing, the cross layer."""

import json
from pathlib import Path

import pytest
import torch
from harness_utils import in_process
from test_harness_runs import RECORD_KEYS, history, params_hash

from experiments import checkpoint, errors
from experiments.dcn import data as recsys_data
from experiments.dcn import model as dcn_model


@pytest.fixture
def run_dcn(tmp_path):
    """Run the dcn runner in-process at smoke scale; returns (record or None, run_dir)."""
    return in_process("dcn", tmp_path)


def test_cross_layer_matches_the_formula_on_a_hand_example():
    x0 = torch.tensor([[1.0, 2.0, 3.0]])
    xl = torch.tensor([[0.5, -1.0, 2.0]])
    w = torch.tensor([1.0, 0.0, 0.5])
    b = torch.tensor([0.1, 0.2, 0.3])
    # xl . w = 0.5 + 0 + 1 = 1.5; x0 * 1.5 = [1.5, 3, 4.5]; + b + xl
    expected = torch.tensor([[1.5 + 0.1 + 0.5, 3.0 + 0.2 - 1.0, 4.5 + 0.3 + 2.0]])
    assert torch.allclose(dcn_model.cross(x0, xl, w, b), expected)


def test_smoke_run_writes_a_record_and_learns_the_planted_model(run_dcn, tmp_path):
    record, run_dir = run_dcn("seed=3", optim="adamw32")
    assert set(record) == RECORD_KEYS
    assert (record["task"], record["optim"], record["scale"], record["seed"]) == (
        "dcn", "adamw32", "smoke", 3)
    m = record["metrics"]
    assert {"auc", "logloss", "val_auc", "val_logloss", "train_loss"} <= set(m)
    assert 60 < m["auc"] <= 100 and 0 < m["logloss"] < 0.69, m  # better than a coin
    assert record["memory"]["state_bytes"]["full_precision"] > 0
    assert record["time"]["throughput_unit"] == "samples/s" and record["time"]["steps"] == 16
    path = tmp_path / "records" / "smoke" / "dcn" / "adamw32" / "seed3.json"
    assert json.loads(path.read_text())["metrics"] == m
    assert len([r for r in history(run_dir).values() if "loss" in r]) == 16


def test_resume_is_bit_identical_to_an_uninterrupted_run(run_dcn):
    straight, straight_dir = run_dcn(run_dir="straight", records="rec_straight")
    n = straight["time"]["steps"]
    stopped, resumed_dir = run_dcn(f"stop_at_step={n // 2}", run_dir="resumed",
                                   records="rec_resumed")
    assert stopped is None and not (resumed_dir.parent / "rec_resumed").exists()
    assert checkpoint.load(resumed_dir / "ckpt.pt")["step"] == n // 2
    resumed, _ = run_dcn(run_dir="resumed", records="rec_resumed")

    a, b = history(straight_dir), history(resumed_dir)
    assert [a[s]["loss"] for s in range(1, n + 1)] == [b[s]["loss"] for s in range(1, n + 1)]
    assert params_hash(straight_dir / "ckpt.pt") == params_hash(resumed_dir / "ckpt.pt")
    assert straight["metrics"] == resumed["metrics"]


def test_nonfinite_loss_stops_with_a_crash_checkpoint(run_dcn, tmp_path):
    with pytest.raises(errors.NonFiniteLoss, match=r"at step \d+"):
        run_dcn("scale.lr=1e30", optim="torch_adamw")
    assert (tmp_path / "run" / "crash.pt").exists()
    assert not list((tmp_path / "records").rglob("seed*.json"))  # no record, a crash note
    assert len(list((tmp_path / "records").rglob("crash-seed*.json"))) == 1


def write_ml100k_sample(folder: Path) -> None:
    """Three recbole atomic files in the wheel's layout, with a missing year and no genre."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "ml-100k.user").write_text(
        "user_id:token\tage:token\tgender:token\toccupation:token\tzip_code:token\n"
        "1\t24\tM\ttechnician\t85711\n"
        "2\t53\tF\tother\t94043\n")
    (folder / "ml-100k.item").write_text(
        "item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq\n"
        "10\tToy Story\t1995\tAnimation Children's Comedy\n"
        "20\tUnknown\t\t\n"
        "30\tGoldenEye\t1995\tAction Adventure Thriller\n")
    (folder / "ml-100k.inter").write_text(
        "user_id:token\titem_id:token\trating:float\ttimestamp:float\n"
        "1\t10\t5\t881250949\n"
        "2\t20\t3\t891717742\n"
        "2\t30\t4\t878887116\n"
        "1\t30\t1\t880606923\n")


def test_movielens_parsing_on_a_sample(tmp_path):
    write_ml100k_sample(tmp_path / "ml")
    t = recsys_data.load_movielens(tmp_path / "ml")
    assert t["label"].tolist() == [1.0, 0.0, 1.0, 0.0]  # rating >= 4 is a click
    s = t["sparse"]
    assert s["user_id"][:, 0].tolist() == [1, 2, 2, 1] and s["item_id"][:, 0].tolist() == [1, 2, 3, 3]
    # age groups (<18, 18-24, 25-34, ..., 56+) are ids 1..7: 24 -> 2, 53 -> 6
    assert s["age"][:, 0].tolist() == [2, 6, 6, 2]
    assert s["gender"][:, 0].tolist() == [2, 1, 1, 2]  # sorted vocabulary: F=1, M=2
    assert s["year"][:, 0].tolist() == [1, 0, 1, 1]  # missing year -> OOV 0
    genres = s["genres"]
    assert genres.shape == (4, 3) and (genres[1] == -1).all()  # no genre: an empty bag
    # ids by sorted name: Action 1, Adventure 2, Animation 3, Children's 4, Comedy 5, Thriller 6
    assert genres[0].tolist() == [3, 4, 5] and genres[2].tolist() == [1, 2, 6]
    assert t["cardinality"] == {"user_id": 3, "age": 8, "gender": 3, "occupation": 3,
                                "item_id": 4, "genres": 7, "year": 2}
    assert t["dense"].shape == (4, 2)

    kjt = recsys_data.to_kjt(s)  # the jagged view: genres has 3 + 0 + 3 + 3 ids
    assert kjt.to_dict()["genres"].lengths().tolist() == [3, 0, 3, 3]
    assert kjt.to_dict()["user_id"].values().tolist() == [1, 2, 2, 1]


def test_movielens_split_is_fixed_and_disjoint():
    a = recsys_data.random_split(1000, [0.8, 0.1, 0.1], 7)
    assert [len(p) for p in a] == [800, 100, 100]
    assert torch.cat(a).sort().values.tolist() == list(range(1000))
    assert all(torch.equal(x, y) for x, y in zip(a, recsys_data.random_split(1000, [0.8, 0.1, 0.1], 7)))


def test_missing_movielens_names_the_path_and_the_script(run_dcn, tmp_path):
    missing = tmp_path / "no-ml"
    with pytest.raises(errors.DataNotFound) as err:
        run_dcn(f"task.data_dir={missing}", scale="small")
    assert str(missing / "ml-100k.inter") in str(err.value)
    assert "scripts/get_movielens.sh" in str(err.value)


def test_missing_criteo_names_the_path(run_dcn, tmp_path):
    with pytest.raises(errors.DataNotFound, match="Criteo"):
        run_dcn(f"task.data_dir={tmp_path / 'no-criteo'}", scale="paper")


def test_criteo_preprocessing_on_a_tiny_tsv(tmp_path):
    pytest.importorskip("pandas")
    rows = []
    for k in range(14):
        ints = [str(k)] + [""] * 12  # I2..I13 missing -> 0
        cats = ["aa" if k % 2 else "bb"] + [f"rare{k}"] + ["cc"] * 24
        rows.append("\t".join([str(k % 2)] + ints + cats))
    (tmp_path / "train.txt").write_text("\n".join(rows) + "\n")
    t = recsys_data.load_criteo(tmp_path, min_count=2)
    assert t["label"].tolist() == [k % 2 for k in range(14)]
    assert torch.allclose(t["dense"][:, 0], torch.log1p(torch.arange(14.0)))
    assert (t["dense"][:, 1:] == 0).all()
    assert (t["sparse"]["C2"] == 0).all()  # each seen once < min_count: OOV
    assert t["cardinality"]["C1"] == 3 and t["cardinality"]["C2"] == 1
    train, val, test = recsys_data.criteo_split(14)
    assert train.tolist() == list(range(12)) and sorted(val.tolist() + test.tolist()) == [12, 13]
