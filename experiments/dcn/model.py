"""Deep & Cross Network (Wang et al. 2017): a cross network and an MLP side by side on the
embedded features. Embeddings go through torchrec (EmbeddingBagCollection over a
KeyedJaggedTensor), the path that scales to torchrec's sharding on GPUs."""

import torch


def cross(x0: torch.Tensor, xl: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """One cross layer (Wang et al. 2017, eq. 3): x_{l+1} = x0 (x_l . w) + b + x_l, a rank-one
    feature interaction of degree l + 2 at the cost of 2d parameters."""
    return x0 * (xl @ w).unsqueeze(-1) + b + xl


def embedding_dims(cardinality: dict, embedding_dim) -> dict:
    """Each feature's embedding width: ``embedding_dim`` for all, or with "auto" the rule of
    Wang et al. 2017 (section 4.2): 6 x cardinality^(1/4), rounded to the nearest integer."""
    if embedding_dim == "auto":
        return {key: max(1, round(6 * int(rows) ** 0.25)) for key, rows in cardinality.items()}
    if not isinstance(embedding_dim, int) or embedding_dim < 1:
        raise ValueError(f"embedding_dim={embedding_dim!r}: a positive int or 'auto' "
                         "(6 x cardinality^(1/4) per feature, Wang et al. 2017)")
    return dict.fromkeys(cardinality, embedding_dim)


class DCN(torch.nn.Module):
    """Embeddings + dense features -> x0; a cross network and an MLP side by side on x0; their
    outputs concatenated into a linear head giving one click logit per row."""

    def __init__(self, cardinality: dict, n_dense: int, embedding_dim, cross_layers: int,
                 mlp: list, device=None, batch_norm: bool = False):
        super().__init__()
        from torchrec import EmbeddingBagCollection, EmbeddingBagConfig, PoolingType

        # MEAN pooling: a multi-id feature (genres) is the average of its ids' embeddings, so
        # its scale does not grow with the number of ids; single ids are unaffected.
        dims = embedding_dims(cardinality, embedding_dim)
        self.ebc = EmbeddingBagCollection(tables=[
            EmbeddingBagConfig(name=f"t_{key}", embedding_dim=dims[key],
                               num_embeddings=int(rows), feature_names=[key],
                               pooling=PoolingType.MEAN)
            for key, rows in cardinality.items()], device=device)
        d = n_dense + sum(dims.values())
        self.cross_w = torch.nn.Parameter(torch.randn(cross_layers, d, device=device) / d**0.5)
        self.cross_b = torch.nn.Parameter(torch.zeros(cross_layers, d, device=device))
        layers, width = [], d
        for h in mlp:
            # Wang et al. 2017 (section 4.2) batch-normalise the deep layers.
            norm = [torch.nn.BatchNorm1d(h)] if batch_norm else []
            layers += [torch.nn.Linear(width, h), *norm, torch.nn.ReLU()]
            width = h
        self.deep = torch.nn.Sequential(*layers).to(device)
        self.head = torch.nn.Linear(d + width, 1, device=device)

    def forward(self, dense: torch.Tensor, kjt) -> torch.Tensor:
        x0 = torch.cat([dense, self.ebc(kjt).values()], dim=1)
        x = x0
        for w, b in zip(self.cross_w, self.cross_b):
            x = cross(x0, x, w, b)
        return self.head(torch.cat([x, self.deep(x0)], dim=1)).squeeze(1)
