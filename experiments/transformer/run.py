"""Transformer translation (the paper's Table 1, column 2), at three scales:

- smoke: synthetic digit strings -> the digits reversed, a tiny model; seconds, for tests.
- small: ~19k German->English sentence pairs from Debian's Ding dictionary, a small model.
- paper: Transformer-Base on user-given parallel text (WMT14 en-de), the paper's recipe.

Read top to bottom: data and BPE, model, optimizer and schedule, the loop, BLEU, the record.
The run's infrastructure (seeding, resume, checkpoints, logging, the record) is
experiments.scaffold.
"""

import logging
from pathlib import Path
from types import SimpleNamespace

import torch
import torch.nn.functional as F
from omegaconf import DictConfig

from experiments import optimizers, ranks, training
from experiments.scaffold import Run, now
from experiments.transformer import data
from experiments.transformer.evaluate import bleu, valid_loss
from experiments.transformer.model import Seq2Seq

log = logging.getLogger(__name__)


def main(cfg: DictConfig) -> dict | None:
    hp = cfg.scale
    with Run(cfg, unit="target tokens") as run:
        if run.finished:
            return run.finished
        device, rank, world = run.device, run.rank, run.world
        # The global batch is max_tokens padded tokens per step; each GPU's micro-batch at
        # most micro_tokens (accumulation makes up the rest).
        plan = run.plan_batch(hp.max_tokens, hp.get("micro_tokens"), unit="tokens",
                              key="scale.max_tokens")
        d = load_data(cfg, plan, rank, world)
        steps_per_epoch = len(d.batches) // (world * plan.accum)
        # max_steps: the paper counts steps (100k for the base model), not epochs.
        total = min(hp.epochs * steps_per_epoch, hp.get("max_steps") or hp.epochs * steps_per_epoch)
        log.info("%d/%d/%d pairs, vocab %d, %d batches of <= %d tokens per epoch, %d steps",
                 len(d.train), len(d.valid), len(d.test), d.tok.get_vocab_size(),
                 len(d.batches), plan.micro, total)

        raw = Seq2Seq(d.tok.get_vocab_size(), **hp.model).to(device)
        optimizer, scheduler = optimizer_and_schedule(cfg, raw)
        amp = training.autocast(device, hp.get("amp", False))
        model = run.data_parallel(raw)
        run.attach(raw, optimizer, scheduler, steps_per_epoch=steps_per_epoch, total=total)

        def loss_of(idx):
            src, tgt_in, tgt_out = data.collate(d.train, idx, device)
            with amp:
                logits = model(src, tgt_in)
            loss = F.cross_entropy(logits.float().flatten(0, 1), tgt_out.flatten(),
                                   ignore_index=data.PAD, reduction="sum",
                                   label_smoothing=hp.label_smoothing)
            return loss, int((tgt_out != data.PAD).sum())

        def validate():
            return valid_loss(raw, d.valid, d.valid_batches, device, amp, rank, world)

        metrics = {}
        while run.step < total:
            epoch, start = divmod(run.step, steps_per_epoch)
            for mine, everyone in data.train_batches(d.batches, cfg.seed, epoch, start, rank,
                                                     world, plan.accum):
                run.begin_step()
                # The mean over the global batch's target tokens, counted from the data.
                global_tokens = data.target_tokens(d.train, everyone)
                losses, n = run.train_step(model, mine, loss_of, global_tokens, hp.clip_grad)
                scheduler.step()
                loss = sum(s.item() for s in losses) / n  # this rank's per-token mean
                run.end_step(loss, items=global_tokens)
                if run.eval_due(hp.eval_every):
                    metrics = run.log_eval(validate())
                    log.info("step %d/%d epoch %d loss %.4f valid_loss %.4f valid_ppl %.2f",
                             run.step, total, epoch, loss, metrics["valid_loss"],
                             metrics["valid_ppl"])
                if run.stopping():
                    return None
                if run.step >= total:  # max_steps mid-epoch
                    break
        metrics = metrics or validate()  # resumed at the last step: evaluate again
        run.checkpoint()
        return run.finish({**test_bleu(run, raw, d, amp), **metrics})


def load_data(cfg: DictConfig, plan, rank: int, world: int) -> SimpleNamespace:
    """The splits encoded with the BPE (``tok``; ``train``, ``valid``, ``test`` and the
    ``test_pairs`` that BLEU scores), and the training and validation pairs in batches of at
    most ``plan.micro`` padded tokens (``batches``, ``valid_batches``), checked to make at
    least one step of the ranks' micro-batches."""
    hp = cfg.scale
    splits = data.load_splits(cfg, hp)
    cache = cfg.task.get("bpe_cache_dir") or cfg.run_dir
    # Rank 0 trains (and caches) the BPE, the others then load it; on WMT14 that takes
    # longer than the default collective timeout, hence the long-timeout barrier.
    if rank != 0:
        ranks.wait_for_rank0(world)
    tok = data.train_bpe(splits["train"], hp.vocab_size, cache)
    if rank == 0:
        ranks.wait_for_rank0(world)
    train = data.encode(tok, splits["train"], hp.max_len)
    valid = data.encode(tok, splits["valid"], hp.max_len)
    test_pairs = splits["test"][: hp.bleu_sentences or None]
    batches = data.token_batches(data.pair_lengths(train), plan.micro)
    data.check_batches(len(batches), world * plan.accum,
                       cfg.task.data_dir if hp.data == "folder" else f"scale.data={hp.data}")
    return SimpleNamespace(
        tok=tok, train=train, valid=valid, test_pairs=test_pairs,
        test=data.encode(tok, test_pairs, hp.max_len), batches=batches,
        valid_batches=data.token_batches(data.pair_lengths(valid), plan.micro))


def optimizer_and_schedule(cfg: DictConfig, model: torch.nn.Module):
    """The optimizer the YAML names, with the task's hyperparameters (the same for every
    optimizer), and the inverse-sqrt schedule with linear warm-up, peaking at the recipe's
    lr (Vaswani et al.)."""
    hp = cfg.scale
    groups = training.param_groups(model, hp.weight_decay)
    optimizer = optimizers.build_optimizer(cfg, groups, lr=hp.lr, beta2=hp.beta2, eps=hp.eps,
                                           weight_decay=hp.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: training.inverse_sqrt(s, hp.warmup_steps))
    return optimizer, scheduler


def test_bleu(run: Run, model: torch.nn.Module, d: SimpleNamespace, amp) -> dict:
    """BLEU of ``model`` on the test pairs, once, at the end (beam search costs more than the
    validation loss); rank 0 writes the hypotheses to test_hypotheses.txt in the run folder."""
    hp, t0 = run.cfg.scale, now()
    scores, hyps = bleu(model, d.tok, d.test_pairs, d.test, hp, run.device, amp)
    log.info("BLEU %.2f (copy-the-source %.2f) on %d test sentences, beam %d, %.0f s",
             scores["bleu"], scores["copy_bleu"], len(d.test_pairs), hp.beam, now() - t0)
    run.log_eval(scores)
    if run.rank == 0:
        (Path(run.cfg.run_dir) / "test_hypotheses.txt").write_text(
            "".join(h + "\n" for h in hyps), encoding="utf-8")
    return scores
