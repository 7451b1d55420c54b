"""Transformer's evaluation: validation NLL and perplexity (on the eval_every schedule), and
SacreBLEU of beam-search output on the test split (once, at the end)."""

import math

import torch
import torch.nn.functional as F

from experiments.transformer import data
from experiments.transformer import model as model_lib


@torch.no_grad()
def valid_loss(model, encoded, batches, device, amp, rank, world) -> dict:
    """Per-token negative log-likelihood (no label smoothing) on the validation split, and its
    perplexity; each rank takes its share of the batches. ``model`` is the unwrapped module:
    a DDP forward broadcasts buffers, a collective per batch, so a rank with one batch fewer
    would hang the others. The one all_reduce below is called once by every rank, whatever
    its number of batches (they differ by at most one)."""
    model.eval()
    sums = torch.zeros(2, dtype=torch.float64, device=device)
    for idx in batches[rank::world]:
        src, tgt_in, tgt_out = data.collate(encoded, idx, device)
        with amp:
            logits = model(src, tgt_in)
        nll = F.cross_entropy(logits.float().flatten(0, 1), tgt_out.flatten(),
                              ignore_index=data.PAD, reduction="sum")
        sums += torch.stack([nll.double(), (tgt_out != data.PAD).sum().double()])
    if world > 1:
        torch.distributed.all_reduce(sums)
    model.train()
    loss = (sums[0] / sums[1]).item()
    return {"valid_loss": loss, "valid_ppl": math.exp(min(loss, 50.0))}


@torch.no_grad()
def bleu(model, tok, pairs, encoded, hp, device, amp) -> tuple[dict, list[str]]:
    """SacreBLEU (default 13a tokenization) of beam-search output, decoded back to plain text,
    against the raw references; and of the source copied as the hypothesis (a floor any real
    translation must clear). Sentences go in batches of similar source length."""
    import sacrebleu

    model.eval()
    hyps = [None] * len(pairs)
    lengths = [len(s) for s, _ in encoded]
    for idx in data.token_batches(lengths, hp.beam_max_tokens):
        src = data.pad_batch([encoded[i][0] for i in idx], device)
        with amp:
            out = model_lib.beam_search(model, src, hp.beam, model_lib.max_lengths(
                src, hp.max_len_a, hp.max_len_b), hp.length_penalty)
        for i, ids in zip(idx, out):
            hyps[i] = tok.decode(ids)
    model.train()
    refs = [t for _, t in pairs]
    return {"bleu": sacrebleu.corpus_bleu(hyps, [refs]).score,
            "copy_bleu": sacrebleu.corpus_bleu([s for s, _ in pairs], [refs]).score,
            "bleu_sentences": len(pairs)}, hyps
