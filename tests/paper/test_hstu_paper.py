"""The hstu paper path (scale=paper: HSTU-large, 200-item windows, 128 negatives) end to end
on a miniature MovieLens-1M ratings.dat (marker `paper`), cut to 2 steps, in one process and
under torchrun with 2 gloo ranks, each to a complete, validated record."""

import random
from pathlib import Path

import pytest
from test_paper_paths import launch, the_record

pytestmark = [pytest.mark.paper, pytest.mark.timeout(900)]


def ml1m_ratings(path: Path, users=48, movies=300) -> Path:
    """GroupLens' ratings.dat: UserID::MovieID::Rating::Timestamp, users in id order, each
    user's ratings not in time order, some at one timestamp (as in the real file), movie ids
    sparse (1..3952 with gaps); 20 to 240 ratings a user, so some exceed the 200-item window."""
    rng = random.Random(0)
    ids = sorted(rng.sample(range(1, 3953), movies))
    lines = []
    for user in range(1, users + 1):
        n = rng.choice([20, 35, 60, 240]) if user % 7 else 240
        seen = rng.sample(ids, n)  # a user rates a movie once
        t0 = 956703932 + rng.randrange(10**7)
        times = sorted(t0 + rng.randrange(0, 10**6, 60) for _ in seen)  # ties: minutes
        rows = [f"{user}::{m}::{rng.randint(1, 5)}::{t}" for m, t in zip(seen, times)]
        rng.shuffle(rows)
        lines += rows
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture
def synthetic_ml1m(tmp_path):
    """Per test: the runner caches its parsing next to the file."""
    return ml1m_ratings(tmp_path / "ml-1m" / "ratings.dat")


@pytest.mark.parametrize("ranks", [1, 2])
def test_hstu_large_on_ratings_dat(tmp_path, synthetic_ml1m, ranks):
    # 48 users in batches of 24 for one epoch (the recipe's 101 would be 101 x 2 steps):
    # 2 steps of the full HSTU-large, then full ranking of the validation and test targets.
    out, recs = launch(tmp_path, ranks, "task=hstu", "optim=solo_4_2bit",
                       f"task.data_dir={synthetic_ml1m.parent}", "scale.batch_size=24",
                       "scale.epochs=1", "scale.eval_batch_size=10")
    rec = the_record(out, recs, ranks, steps=2)
    m = rec["metrics"]
    assert 0 <= m["ndcg"] <= m["hr"] <= 100 and 0 <= m["val_ndcg"] <= m["val_hr"] <= 100
    assert rec["config"]["scale"]["model"]["blocks"] == 8
    # the parsed sequences, cached once (by rank 0 alone under torchrun)
    assert (synthetic_ml1m.parent / "ratings_hstu" / "done").exists()
