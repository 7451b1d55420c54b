"""HSTU, the Hierarchical Sequential Transduction Unit (Zhai et al., "Actions Speak Louder
than Words: Trillion-Parameter Sequential Transducers for Generative Recommendations", ICML
2024, arXiv 2402.17152), section 3 (eqs. 1-3) and the traditional sequential setting of
section 4.1.1, written here from the paper and from reading the authors' research code,
https://github.com/facebookresearch/generative-recommenders at commit
2e81fab69a497fb5e24cd23569adf1e78070e4ec (generative_recommenders/research/modeling/sequential/
hstu.py, embedding and loss modules; configs/ml-1m/*.gin). No code is copied.

One layer, on the sequence X [B, N, D] (eq. 1-3):

    U, V, Q, K = split(SiLU(LayerNorm(X) W_uvqk))
    A = SiLU(Q K^T + rab^{p,t}) / n, causal (position j <= i only)   (no softmax)
    Y = X + W_o Dropout(U * LayerNorm(A V))

rab^{p,t}: a learned bias per relative position i - j plus one per bucket of the time gap
ts(next of i) - ts(j), buckets floor(ln(max(|gap| s, 1)) / 0.301) capped at 128, per layer.
As in the authors' code: LayerNorms without weights (eps 1e-6), no 1/sqrt(d) scaling, n the
model's maximum length (a constant; the LayerNorm after A V makes its value immaterial but for
eps), the input embedding scaled by sqrt(D) plus a learned absolute position embedding, dropout
on the input and before W_o, and the output L2-normalised. Items score by cosine similarity
with the L2-normalised item embedding, the same table as the input's (tied).

Changes from the authors' code: dense padded batches instead of jagged tensors (fbgemm ops);
the position bias keeps the max_len causal offsets only (theirs has 2 (max_len + 11) - 1 entries,
the anti-causal half never used); the absolute position table has max_len rows (theirs
max_len + 11); the time gap of the last position is to the target's timestamp, as theirs.

torchrec: not used. The item table is read three ways: the input sequence, 128 sampled rows
per target (the loss) and every row at once for full-ranking scores (evaluation).
torchrec's EmbeddingCollection serves lookups by KeyedJaggedTensor and, sharded, holds no
rank's whole table, so the tied output side would bypass it anyway; the authors' research code
also uses a plain torch.nn.Embedding. At 3,707 x 50 the table needs no sharding.
"""

import math

import torch
import torch.nn.functional as F

TIME_BUCKETS = 128
BUCKET_DIVISOR = 0.301  # ln-gap per bucket, the authors' constant
EPS = 1e-6


def time_buckets(ts: torch.Tensor) -> torch.Tensor:
    """[B, N + 1] timestamps (s; column i + 1 the time of the item after position i) ->
    [B, N, N] bucket of the gap between the item after query position i and key j."""
    gap = (ts[:, 1:, None] - ts[:, None, :-1]).abs().clamp(min=1).float()
    return (gap.log() / BUCKET_DIVISOR).long().clamp(0, TIME_BUCKETS)


class HSTULayer(torch.nn.Module):
    """One HSTU layer (module docstring): D model width, ``heads`` heads of ``dqk`` (Q, K) and
    ``dv`` (U, V) dimensions, biases for offsets up to ``max_len``."""

    def __init__(self, dim: int, heads: int, dqk: int, dv: int, max_len: int, dropout: float):
        super().__init__()
        self.heads, self.dqk, self.dv, self.max_len, self.dropout = heads, dqk, dv, max_len, dropout
        self.uvqk = torch.nn.Parameter(torch.randn(dim, heads * (2 * dv + 2 * dqk)) * 0.02)
        self.out = torch.nn.Linear(heads * dv, dim)
        torch.nn.init.xavier_uniform_(self.out.weight)
        self.pos_bias = torch.nn.Parameter(torch.randn(max_len) * 0.02)  # by offset i - j
        self.time_bias = torch.nn.Parameter(torch.randn(TIME_BUCKETS + 1) * 0.02)

    def forward(self, x: torch.Tensor, buckets: torch.Tensor, offsets: torch.Tensor,
                causal: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        h = F.silu(F.layer_norm(x, (d,), eps=EPS) @ self.uvqk)
        u, v, q, k = h.split([self.heads * self.dv] * 2 + [self.heads * self.dqk] * 2, dim=-1)
        scores = torch.einsum("bnhd,bmhd->bhnm", q.reshape(b, n, self.heads, self.dqk),
                              k.reshape(b, n, self.heads, self.dqk))
        bias = self.pos_bias[offsets] + self.time_bias[buckets]  # [B, N, N]
        attn = F.silu(scores + bias[:, None]) * causal / self.max_len
        av = torch.einsum("bhnm,bmhd->bnhd", attn, v.reshape(b, n, self.heads, self.dv))
        av = F.layer_norm(av.reshape(b, n, self.heads * self.dv), (self.heads * self.dv,),
                          eps=EPS)
        return x + self.out(F.dropout(u * av, self.dropout, self.training))


class HSTU(torch.nn.Module):
    """Item embeddings -> HSTU layers -> one L2-normalised query vector per position, scored
    against the L2-normalised item embeddings. ``n_items`` ids from 1 (0 pads)."""

    def __init__(self, n_items: int, dim: int, blocks: int, heads: int, dqk: int, dv: int,
                 max_len: int, dropout: float):
        super().__init__()
        self.n_items, self.dim, self.max_len, self.dropout = n_items, dim, max_len, dropout
        self.items = torch.nn.Embedding(n_items + 1, dim)
        with torch.no_grad():  # truncated normal, std 0.02 (authors' item init); row 0 pads
            torch.nn.init.trunc_normal_(self.items.weight, std=0.02, a=-0.04, b=0.04)
            self.items.weight[0].zero_()
        # Xavier normal: the authors' model init overrides their position table's own init.
        self.positions = torch.nn.Parameter(torch.nn.init.xavier_normal_(
            torch.empty(max_len, dim)))
        self.layers = torch.nn.ModuleList(
            HSTULayer(dim, heads, dqk, dv, max_len, dropout) for _ in range(blocks))

    def forward(self, ids: torch.Tensor, ts: torch.Tensor) -> torch.Tensor:
        """ids [B, N] (0 pads, N <= max_len), ts [B, N + 1] (s) -> [B, N, D] unit vectors."""
        n = ids.shape[1]
        if n > self.max_len:
            raise ValueError(f"sequence of {n} items > max_len {self.max_len}")
        x = self.items(ids) * math.sqrt(self.dim) + self.positions[:n]
        x = F.dropout(x, self.dropout, self.training) * (ids != 0)[..., None]
        pos = torch.arange(n, device=ids.device)
        offsets = (pos[:, None] - pos[None, :]).clamp(min=0)
        causal = (pos[:, None] >= pos[None, :]).to(x.dtype)
        buckets = time_buckets(ts)
        for layer in self.layers:
            x = layer(x, buckets, offsets, causal)
        return F.normalize(x, dim=-1, eps=EPS)

    def item_vectors(self, ids: torch.Tensor | None = None) -> torch.Tensor:
        """L2-normalised embeddings of ``ids`` (None: every item, row k = id k, row 0 pads)."""
        w = self.items.weight if ids is None else self.items(ids)
        return F.normalize(w, dim=-1, eps=EPS)


def sampled_softmax(model: HSTU, queries: torch.Tensor, targets: torch.Tensor,
                    negatives: int, temperature: float) -> tuple[torch.Tensor, int]:
    """The authors' training loss: at each position with a target (id > 0), softmax
    cross-entropy of the target against ``negatives`` items drawn uniformly (per position,
    from every item; a draw equal to the target is masked out), cosine similarity over
    ``temperature``. (sum over positions, number of positions)."""
    keep = targets > 0
    q, pos = queries[keep], targets[keep]
    neg = torch.randint(1, model.n_items + 1, (len(pos), negatives), device=pos.device)
    # Normalised once (far fewer rows than draws); F.embedding's backward sums the rows'
    # gradients several times faster than indexing's on CPUs.
    table = model.item_vectors()
    pos_logit = (q * F.embedding(pos, table)).sum(-1, keepdim=True)
    neg_logit = torch.einsum("md,mrd->mr", q, F.embedding(neg, table))
    neg_logit = neg_logit.masked_fill(neg == pos[:, None], -math.inf)
    logits = torch.cat([pos_logit, neg_logit], 1) / temperature
    return -F.log_softmax(logits, dim=1)[:, 0].sum(), len(pos)
