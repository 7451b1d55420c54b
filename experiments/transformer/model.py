"""The encoder-decoder Transformer (Vaswani et al. 2017) and its decoding: greedy and batched
beam search with the GNMT length penalty. Built from torch.nn's encoder/decoder layers.

Ids 0..3 are <pad>, <s>, </s>, <unk> (translation_data.SPECIALS).
"""

import math

import torch
import torch.nn.functional as F
from torch import nn

PAD, BOS, EOS = 0, 1, 2


def sinusoids(n: int, d: int) -> torch.Tensor:
    """The fixed sinusoidal position table of the paper, (n, d)."""
    pos = torch.arange(n, dtype=torch.float32)[:, None]
    freq = torch.exp(torch.arange(0, d, 2, dtype=torch.float32) * (-math.log(10000.0) / d))
    table = torch.zeros(n, d)
    table[:, 0::2], table[:, 1::2] = torch.sin(pos * freq), torch.cos(pos * freq)
    return table


class Seq2Seq(nn.Module):
    """Encoder-decoder Transformer with one embedding shared by source, target and the output
    projection (a joint BPE vocabulary makes that possible, as in the paper's en-de setup)."""

    def __init__(self, vocab: int, d_model=512, ffn=2048, heads=8, enc_layers=6, dec_layers=6,
                 dropout=0.1, norm_first=False, max_positions=1024):
        super().__init__()
        self.d_model = d_model
        self.embed = nn.Embedding(vocab, d_model, padding_idx=PAD)
        nn.init.normal_(self.embed.weight, std=d_model**-0.5)  # scaled by sqrt(d) in forward
        with torch.no_grad():
            self.embed.weight[PAD].zero_()
        self.register_buffer("positions", sinusoids(max_positions, d_model), persistent=False)
        self.dropout = nn.Dropout(dropout)
        kw = dict(d_model=d_model, nhead=heads, dim_feedforward=ffn, dropout=dropout,
                  batch_first=True, norm_first=norm_first)
        # Pre-norm stacks need a final LayerNorm; post-norm ones end normalized already.
        self.encoder = nn.TransformerEncoder(
            nn.TransformerEncoderLayer(**kw), enc_layers,
            norm=nn.LayerNorm(d_model) if norm_first else None, enable_nested_tensor=False)
        self.decoder = nn.TransformerDecoder(
            nn.TransformerDecoderLayer(**kw), dec_layers,
            norm=nn.LayerNorm(d_model) if norm_first else None)

    def _embed(self, ids):
        x = self.embed(ids) * math.sqrt(self.d_model) + self.positions[: ids.size(1)]
        return self.dropout(x)

    def encode(self, src):
        src_pad = src == PAD
        return self.encoder(self._embed(src), src_key_padding_mask=src_pad), src_pad

    def decode(self, tgt_in, memory, src_pad):
        """Logits (B, T, vocab) for every target position, causally masked."""
        n = tgt_in.size(1)  # True = may not attend (a later position); bool like the pad masks
        causal = torch.ones(n, n, dtype=torch.bool, device=tgt_in.device).triu(1)
        h = self.decoder(self._embed(tgt_in), memory, tgt_mask=causal,
                         tgt_key_padding_mask=tgt_in == PAD, memory_key_padding_mask=src_pad)
        return F.linear(h, self.embed.weight)

    def forward(self, src, tgt_in):
        memory, src_pad = self.encode(src)
        return self.decode(tgt_in, memory, src_pad)


def _heads(x, heads: int):
    """(B, T, d) -> (B, heads, T, d / heads)."""
    return x.view(x.size(0), x.size(1), heads, -1).transpose(1, 2)


def _project(attn: nn.MultiheadAttention, x, which: int):
    """The query (0), key (1) or value (2) projection of ``attn``, split into heads."""
    d = attn.embed_dim
    part = slice(which * d, (which + 1) * d)
    return _heads(F.linear(x, attn.in_proj_weight[part], attn.in_proj_bias[part]),
                  attn.num_heads)


def _attend(attn: nn.MultiheadAttention, x, keys, values, may_attend):
    """``attn`` of the queries from x (B, 1, d) over cached keys/values (B, heads, T, d/h)."""
    out = F.scaled_dot_product_attention(_project(attn, x, 0), keys, values,
                                         attn_mask=may_attend)
    return attn.out_proj(out.transpose(1, 2).flatten(2))


def _sublayer(x, norm, norm_first: bool, fn):
    """A residual sub-layer, pre-norm (x + fn(norm(x))) or post-norm (norm(x + fn(x)))."""
    return x + fn(norm(x)) if norm_first else norm(x + fn(x))


class IncrementalDecoder:
    """Seq2Seq's decoder in eval mode run one target position at a time: the keys and values
    of earlier positions (self-attention) and of the memory (cross-attention) are computed
    once and kept, so a step costs one position's work, not the whole prefix's. Its logits
    are those of ``model.decode`` at the last position (up to float rounding)."""

    def __init__(self, model: Seq2Seq, memory, src_pad):
        self.model, self.layers = model, model.decoder.layers
        self.memory = [(_project(layer.multihead_attn, memory, 1),
                        _project(layer.multihead_attn, memory, 2)) for layer in self.layers]
        self.memory_mask = ~src_pad[:, None, None, :]  # SDPA's bool mask: True = may attend
        self.cache: list[tuple] = [()] * len(self.layers)
        self.pad = src_pad.new_zeros(src_pad.size(0), 0)  # True where a prefix token is PAD

    def step(self, ids):
        """Logits (B, vocab) of the position after ``ids`` (B,), the prefix's newest tokens."""
        m, t = self.model, self.pad.size(1)
        x = m.embed(ids)[:, None] * math.sqrt(m.d_model) + m.positions[t]
        self.pad = torch.cat([self.pad, (ids == PAD)[:, None]], 1)
        may_attend = ~self.pad[:, None, None, :]
        for i, layer in enumerate(self.layers):

            def self_attention(h, i=i, layer=layer):
                keys = _project(layer.self_attn, h, 1)
                values = _project(layer.self_attn, h, 2)
                if self.cache[i]:
                    keys = torch.cat([self.cache[i][0], keys], 2)
                    values = torch.cat([self.cache[i][1], values], 2)
                self.cache[i] = (keys, values)
                return _attend(layer.self_attn, h, keys, values, may_attend)

            def cross_attention(h, i=i, layer=layer):
                return _attend(layer.multihead_attn, h, *self.memory[i], self.memory_mask)

            def feed_forward(h, layer=layer):
                return layer.linear2(layer.activation(layer.linear1(h)))

            for norm, fn in ((layer.norm1, self_attention), (layer.norm2, cross_attention),
                             (layer.norm3, feed_forward)):
                x = _sublayer(x, norm, layer.norm_first, fn)
        if m.decoder.norm is not None:
            x = m.decoder.norm(x)
        return F.linear(x[:, 0], m.embed.weight)

    def reorder(self, rows):
        """Keep the rows ``rows`` (beam search's surviving hypotheses) of the cache; rows stay
        within their sentence, so the memory's keys and values are unchanged."""
        self.cache = [(k[rows], v[rows]) for k, v in self.cache]
        self.pad = self.pad[rows]


def max_lengths(src, a: float, b: int):
    """Decoding budget: a * (longest source in the batch) + b new tokens."""
    return int(a * (src != PAD).sum(1).max().item() + b)


@torch.no_grad()
def greedy(model, src, max_len: int) -> list[list[int]]:
    """Argmax decoding; each output stops before its first EOS (or at max_len tokens)."""
    memory, src_pad = model.encode(src)
    out = torch.full((src.size(0), 1), BOS, dtype=torch.long, device=src.device)
    for _ in range(max_len):
        nxt = model.decode(out, memory, src_pad)[:, -1].argmax(-1)
        out = torch.cat([out, nxt[:, None]], 1)
        if (out == EOS).any(1).all():
            break
    result = []
    for row in out[:, 1:].tolist():
        result.append(row[: row.index(EOS)] if EOS in row else row)
    return result


def length_penalty(length: int, alpha: float) -> float:
    """GNMT's penalty (Wu et al. 2016): ((5 + |Y|) / 6) ** alpha, |Y| counting the EOS."""
    return ((5 + length) / 6) ** alpha


@torch.no_grad()
def beam_search(model, src, beam: int, max_len: int, alpha: float) -> list[list[int]]:
    """Batched beam search. Every step expands each sentence's live beams, takes the 2*beam best
    continuations; those ending in EOS among the first `beam` become finished hypotheses scored
    by log-probability / length_penalty, the best `beam` others stay live. A sentence is done
    once it has `beam` finished hypotheses (fairseq's stopping rule); at max_len the live beams
    are finished as they are. Returns the best finished hypothesis per sentence, EOS dropped.
    With beam=1 this is exactly greedy decoding. The decoder runs one position per step with
    its keys and values cached (IncrementalDecoder), not over the whole prefix again."""
    n, device = src.size(0), src.device
    memory, src_pad = model.encode(src)
    decoder = IncrementalDecoder(model, memory.repeat_interleave(beam, 0),
                                 src_pad.repeat_interleave(beam, 0))
    tokens = torch.full((n * beam, 1), BOS, dtype=torch.long, device=device)
    scores = torch.zeros(n, beam, device=device)
    scores[:, 1:] = float("-inf")  # all beams start identical: expand only the first
    finished = [[] for _ in range(n)]  # (normalized score, ids)
    done = torch.zeros(n, dtype=torch.bool)
    for t in range(max_len + 1):
        logp = decoder.step(tokens[:, -1]).float().log_softmax(-1)
        vocab = logp.size(-1)
        if t == max_len:  # out of budget: only EOS may follow
            logp = torch.full_like(logp, float("-inf"))
            logp[:, EOS] = 0.0
        cand = (scores.view(-1, 1) + logp).view(n, beam * vocab)
        top, idx = cand.topk(min(2 * beam, beam * vocab), dim=1)
        src_beam, tok = idx // vocab, idx % vocab
        is_eos = tok == EOS
        # finish EOS candidates ranked within the first `beam` (finite ones only)
        hits = (is_eos[:, :beam] & torch.isfinite(top[:, :beam])).nonzero().tolist()
        for i, j in hits:
            if done[i] or len(finished[i]) >= beam:
                continue
            prefix = tokens[i * beam + src_beam[i, j].item(), 1:].tolist()
            score = top[i, j].item() / length_penalty(len(prefix) + 1, alpha)
            finished[i].append((score, prefix))
        done |= torch.tensor([len(f) >= beam for f in finished])
        if done.all() or t == max_len:
            break
        # live beams: the best `beam` non-EOS continuations (a stable sort keeps their order)
        keep = torch.sort(is_eos.to(torch.int8), dim=1, stable=True).indices[:, :beam]
        new_beam = src_beam.gather(1, keep)
        scores = top.gather(1, keep)
        scores[done.to(device)] = float("-inf")  # done sentences generate nothing more
        rows = (torch.arange(n, device=device)[:, None] * beam + new_beam).view(-1)
        tokens = torch.cat([tokens[rows], tok.gather(1, keep).view(-1, 1)], 1)
        decoder.reorder(rows)
    return [max(f, key=lambda x: x[0])[1] if f else [] for f in finished]
