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

import torch
import torch.nn.functional as F
from omegaconf import DictConfig

from experiments import optimizers, training
from experiments import ranks as distributed
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
        splits = data.load_splits(cfg, hp)
        cache = cfg.task.get("bpe_cache_dir") or cfg.run_dir
        # Rank 0 trains (and caches) the BPE, the others then load it; on WMT14 that takes
        # longer than the default collective timeout, hence the long-timeout barrier.
        if rank != 0:
            distributed.wait_for_rank0(world)
        tok = data.train_bpe(splits["train"], hp.vocab_size, cache)
        if rank == 0:
            distributed.wait_for_rank0(world)
        train = data.encode(tok, splits["train"], hp.max_len)
        valid = data.encode(tok, splits["valid"], hp.max_len)
        test_pairs = splits["test"][: hp.bleu_sentences or None]
        test = data.encode(tok, test_pairs, hp.max_len)
        batches = data.token_batches(data.pair_lengths(train), plan.micro)
        valid_batches = data.token_batches(data.pair_lengths(valid), plan.micro)
        steps_per_epoch = len(batches) // (world * plan.accum)
        data.check_batches(len(batches), world * plan.accum,
                           cfg.task.data_dir if hp.data == "folder" else f"scale.data={hp.data}")
        # max_steps: the paper counts steps (100k for the base model), not epochs.
        total = min(hp.epochs * steps_per_epoch, hp.get("max_steps") or hp.epochs * steps_per_epoch)
        log.info("%d/%d/%d pairs, vocab %d, %d batches of <= %d tokens per epoch, %d steps",
                 len(train), len(valid), len(test), tok.get_vocab_size(), len(batches),
                 plan.micro, total)

        raw = Seq2Seq(tok.get_vocab_size(), **hp.model).to(device)
        groups = training.param_groups(raw, hp.weight_decay)
        # The YAML names the optimizer; the task sets its hyperparameters, the same for every one.
        optimizer = optimizers.build_optimizer(cfg, groups, lr=hp.lr, betas=hp.betas, eps=hp.eps,
                                               weight_decay=hp.weight_decay)
        # Inverse-sqrt with linear warm-up, peaking at hp.lr (Vaswani et al.).
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda s: training.inverse_sqrt(s, hp.warmup_steps))
        amp = run.autocast(hp.get("amp", False))
        model = run.data_parallel(raw)
        run.attach(raw, optimizer, scheduler, steps_per_epoch=steps_per_epoch, total=total)

        metrics = {}
        while run.step < total:
            epoch, start = divmod(run.step, steps_per_epoch)
            for mine, everyone in data.train_batches(batches, cfg.seed, epoch, start, rank,
                                                     world, plan.accum):
                run.begin_step()
                # The mean over the global batch's target tokens, counted from the data.
                global_tokens = data.target_tokens(train, everyone)
                optimizer.zero_grad(set_to_none=True)
                loss_sum, tokens_here = 0.0, 0
                for i, idx in enumerate(mine):
                    src, tgt_in, tgt_out = data.collate(train, idx, device)
                    with run.micro_step(model, i):
                        with amp:
                            logits = model(src, tgt_in)
                        loss = F.cross_entropy(logits.float().flatten(0, 1), tgt_out.flatten(),
                                               ignore_index=data.PAD, reduction="sum",
                                               label_smoothing=hp.label_smoothing)
                        run.check_finite(loss)
                        run.backward(loss, global_tokens)
                    loss_sum += loss.item()
                    tokens_here += int((tgt_out != data.PAD).sum())
                loss = loss_sum / tokens_here  # this rank's per-token mean
                run.optimizer_step(model, optimizer, hp.clip_grad)
                scheduler.step()
                run.end_step(loss, items=global_tokens)
                if run.eval_due(hp.eval_every):
                    metrics = run.log_eval(valid_loss(raw, valid, valid_batches, device, amp,
                                                      rank, world))
                    log.info("step %d/%d epoch %d loss %.4f valid_loss %.4f valid_ppl %.2f",
                             run.step, total, epoch, loss, metrics["valid_loss"],
                             metrics["valid_ppl"])
                if run.stopping():
                    return None
                if run.step >= total:  # max_steps mid-epoch
                    break
        if not metrics:  # resumed at the last step: evaluate again for the record
            metrics = valid_loss(raw, valid, valid_batches, device, amp, rank, world)
        run.checkpoint()
        # BLEU once, at the end: beam search costs more than the validation loss.
        t0 = now()
        scores, hyps = bleu(raw, tok, test_pairs, test, hp, device, amp)
        log.info("BLEU %.2f (copy-the-source %.2f) on %d test sentences, beam %d, %.0f s",
                 scores["bleu"], scores["copy_bleu"], len(test_pairs), hp.beam, now() - t0)
        run.log_eval(scores)
        if rank == 0:
            (Path(cfg.run_dir) / "test_hypotheses.txt").write_text(
                "".join(h + "\n" for h in hyps), encoding="utf-8")
        return run.finish({**scores, **metrics})
