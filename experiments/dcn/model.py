"""Deep & Cross Network (Wang et al. 2017): a cross network and an MLP side by side on the
embedded features. Embeddings go through torchrec (EmbeddingBagCollection over a
KeyedJaggedTensor), the path that scales to torchrec's sharding on GPUs."""

import torch


def cross(x0: torch.Tensor, xl: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """One cross layer (Wang et al. 2017, eq. 3): x_{l+1} = x0 (x_l . w) + b + x_l, a rank-one
    feature interaction of degree l + 2 at the cost of 2d parameters."""
    return x0 * (xl @ w).unsqueeze(-1) + b + xl


class DCN(torch.nn.Module):
    """Embeddings + dense features -> x0; a cross network and an MLP side by side on x0; their
    outputs concatenated into a linear head giving one click logit per row."""

    def __init__(self, cardinality: dict, n_dense: int, embedding_dim: int, cross_layers: int,
                 mlp: list, device=None):
        super().__init__()
        from torchrec import EmbeddingBagCollection, EmbeddingBagConfig, PoolingType

        # MEAN pooling: a multi-id feature (genres) is the average of its ids' embeddings, so
        # its scale does not grow with the number of ids; single ids are unaffected.
        self.ebc = EmbeddingBagCollection(tables=[
            EmbeddingBagConfig(name=f"t_{key}", embedding_dim=embedding_dim,
                               num_embeddings=int(rows), feature_names=[key],
                               pooling=PoolingType.MEAN)
            for key, rows in cardinality.items()], device=device)
        d = n_dense + embedding_dim * len(cardinality)
        self.cross_w = torch.nn.Parameter(torch.randn(cross_layers, d, device=device) / d**0.5)
        self.cross_b = torch.nn.Parameter(torch.zeros(cross_layers, d, device=device))
        layers, width = [], d
        for h in mlp:
            layers += [torch.nn.Linear(width, h), torch.nn.ReLU()]
            width = h
        self.deep = torch.nn.Sequential(*layers).to(device)
        self.head = torch.nn.Linear(d + width, 1, device=device)

    def forward(self, dense: torch.Tensor, kjt) -> torch.Tensor:
        x0 = torch.cat([dense, self.ebc(kjt).values()], dim=1)
        x = x0
        for w, b in zip(self.cross_w, self.cross_b):
            x = cross(x0, x, w, b)
        return self.head(torch.cat([x, self.deep(x0)], dim=1)).squeeze(1)
