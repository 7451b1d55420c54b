"""The Criteo Kaggle Display Advertising TSV (label, I1-I13, C1-C26) for the dcn runner at
paper scale: checked, parsed once into .npy arrays (a cache rebuilt whenever the TSV changes,
experiments.cache), loaded as the table experiments.dcn.data describes, and split by day."""

from pathlib import Path

import numpy as np
import torch

from experiments.cache import cached_build, fingerprint
from experiments.datacheck import BadData, require_file
from experiments.errors import DataNotFound

CRITEO_SPLIT_SEED = 20250503
CRITEO_INTS, CRITEO_CATS = 13, 26


def criteo_file(data_dir) -> Path:
    """The Criteo TSV: task.data_dir itself when it is a file, else train.txt (or train.tsv,
    dac_train.txt) in it; DataNotFound naming where it looked and how to get the data."""
    root = Path(data_dir) if data_dir else None
    candidates = [root] if root and root.is_file() else [
        root / name for name in ("train.txt", "train.tsv", "dac_train.txt")] if root else []
    for path in candidates:
        if path.is_file():
            return path
    raise DataNotFound(
        f"Criteo TSV not found: {root or 'task.data_dir=null'} (looked for "
        f"{', '.join(str(c) for c in candidates) or 'a file'}). Get the Kaggle Display "
        "Advertising Challenge data (https://ailab.criteo.com/ressources/, dac.tar.gz: "
        "train.txt, tab-separated label, I1-I13, C1-C26) and pass task.data_dir=DIR or the "
        "file itself."
    )


CRITEO_COLUMNS = (["label"] + [f"I{k}" for k in range(1, CRITEO_INTS + 1)]
                  + [f"C{k}" for k in range(1, CRITEO_CATS + 1)])
CRITEO_FORMAT = 1  # part of every cache's key: bump it when the preprocessing changes
CRITEO_FIX = ("give the Kaggle Display Advertising train.txt (tab-separated: label, I1-I13, "
              "C1-C26, no header) as task.data_dir")


def check_criteo(path: Path) -> Path:
    """Refuse a Criteo file that is empty, a folder, or whose first line has not the 40
    tab-separated fields, before minutes of parsing; the message names the path and the fix."""
    require_file(path, "Criteo TSV", CRITEO_FIX)
    with open(path, encoding="utf-8", errors="replace") as f:
        fields = f.readline().rstrip("\n").split("\t")
    if len(fields) != len(CRITEO_COLUMNS):
        raise BadData(f"{path} line 1 has {len(fields)} tab-separated fields, expected "
                      f"{len(CRITEO_COLUMNS)}; {CRITEO_FIX}")
    return path


def preprocess_criteo(path: Path, min_count: int, out: Path) -> None:
    """Parse the TSV at ``path`` into label/dense/sparse/cardinality .npy files in ``out``
    (see load_criteo); a malformed line stops it with BadData naming the line and the field."""
    import pandas as pd

    cats = CRITEO_COLUMNS[1 + CRITEO_INTS :]
    ints = CRITEO_COLUMNS[1 : 1 + CRITEO_INTS]
    read = dict(sep="\t", header=None, names=CRITEO_COLUMNS, chunksize=2_000_000,
                dtype={c: "string" for c in cats})
    try:
        counts = {c: None for c in cats}  # pass 1: category frequencies
        for chunk in pd.read_csv(path, **read):
            for c in cats:
                vc = chunk[c].value_counts()
                counts[c] = vc if counts[c] is None else counts[c].add(vc, fill_value=0)
        maps = {c: pd.Series(np.arange(1, int((v >= min_count).sum()) + 1),
                             index=v[v >= min_count].index) for c, v in counts.items()}
        labels, dense, sparse, row = [], [], [], 0  # pass 2: encode
        for chunk in pd.read_csv(path, **read):
            label = pd.to_numeric(chunk["label"], errors="coerce").to_numpy(np.float32)
            bad = np.flatnonzero((label != 0) & (label != 1))  # NaN too
            if len(bad):
                raise BadData(f"{path} line {row + bad[0] + 1}: label "
                              f"{chunk['label'].iloc[bad[0]]!r} is not 0 or 1; {CRITEO_FIX}")
            labels.append(label)
            dense.append(np.log1p(np.maximum(chunk[ints].fillna(0).to_numpy(np.float32), 0)))
            sparse.append(np.stack([chunk[c].map(maps[c]).fillna(0).to_numpy(np.int64)
                                    for c in cats], 1).astype(np.int32))
            row += len(chunk)
    except BadData:
        raise
    except ValueError as e:  # pandas' ParserError (a line of 41 fields) is one too
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise BadData(f"{path} is not a Criteo TSV ({first}); {CRITEO_FIX}") from None
    np.save(out / "label.npy", np.concatenate(labels))
    np.save(out / "dense.npy", np.concatenate(dense))
    np.save(out / "sparse.npy", np.concatenate(sparse))
    np.save(out / "cardinality.npy", np.array([len(maps[c]) + 1 for c in cats]))


def load_criteo(data_dir, min_count: int, cache_dir=None) -> dict:
    """The usual preprocessing: missing ints -> 0, then log(1 + max(x, 0)); categories seen
    fewer than min_count times -> OOV id 0 (missing too). Cached as .npy in
    ``<stem>_dcn_min<k>/`` next to the data (or in cache_dir) since parsing 45M lines takes a
    while; the cache is rebuilt whenever the TSV changes (experiments.cache). Rows stay in
    file (time) order."""
    path = check_criteo(criteo_file(data_dir))
    name = f"{path.stem}_dcn_min{min_count}"
    key = {"format": CRITEO_FORMAT, "min_count": min_count, "source": fingerprint(path)}
    cache = cached_build(Path(cache_dir or path.parent) / name, key,
                         lambda out: preprocess_criteo(path, min_count, out))
    sparse = torch.from_numpy(np.load(cache / "sparse.npy"))
    cards = np.load(cache / "cardinality.npy").tolist()
    return {"dense": torch.from_numpy(np.load(cache / "dense.npy")),
            "label": torch.from_numpy(np.load(cache / "label.npy")),
            # int32 columns keep 45M x 26 ids at ~4.8 GB; batches are cast to long
            "sparse": {f"C{k + 1}": sparse[:, k : k + 1] for k in range(CRITEO_CATS)},
            "cardinality": {f"C{k + 1}": int(c) for k, c in enumerate(cards)}}


def criteo_split(n: int) -> list[torch.Tensor]:
    """DCN paper (Wang et al. 2017): the first 6 of the 7 days train; the 7th day is split at
    random into validation and test halves. Days are taken as equal sevenths of the file."""
    cut = n * 6 // 7
    last = cut + torch.randperm(n - cut, generator=torch.Generator().manual_seed(CRITEO_SPLIT_SEED))
    half = (n - cut) // 2
    return [torch.arange(cut), last[:half].sort().values, last[half:].sort().values]
