"""Transformer translation (the paper's Table 1, column 2), at three scales:

- smoke: synthetic digit strings -> the digits reversed, a tiny model; seconds, for tests.
- small: ~19k German->English sentence pairs from Debian's Ding dictionary, a small model.
- paper: Transformer-Base on user-given parallel text (WMT14 en-de), the paper's recipe.

Read top to bottom: data, evaluation, then the run (model, optimizer, resume, loop, record).
"""

import logging
import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from omegaconf import DictConfig

from experiments import common, optimizers, records, seq2seq
from experiments import translation_data as td

log = logging.getLogger(__name__)


# ---------------------------------------------------------------- data


def load_splits(cfg, hp) -> dict:
    if hp.data == "synthetic":
        return td.synthetic(hp.n_train, hp.n_valid, hp.n_test)
    if hp.data == "ding":
        return td.load_ding(cfg.task.get("ding_path") or td.DING_PATH, hp.n_valid, hp.n_test)
    return td.load_folder(cfg.task.data_dir)


def train_batches(batches, seed: int, epoch: int, start: int, rank: int, world: int):
    """The epoch's token-budget batches from step `start` on, in an order drawn from
    (seed, epoch) alone, so resuming mid-epoch is exact; a global step is `world` batches,
    one per rank."""
    order = common.epoch_order(len(batches), seed, epoch).tolist()
    for step in range(start, len(batches) // world):
        yield batches[order[step * world + rank]]


# ---------------------------------------------------------------- evaluation


@torch.no_grad()
def valid_loss(model, encoded, batches, device, amp, rank, world) -> dict:
    """Per-token negative log-likelihood (no label smoothing) on the validation split, and its
    perplexity; each rank takes its share of the batches."""
    model.eval()
    sums = torch.zeros(2, dtype=torch.float64, device=device)
    for idx in batches[rank::world]:
        src, tgt_in, tgt_out = td.collate(encoded, idx, device)
        with amp:
            logits = model(src, tgt_in)
        nll = F.cross_entropy(logits.float().flatten(0, 1), tgt_out.flatten(),
                              ignore_index=td.PAD, reduction="sum")
        sums += torch.stack([nll.double(), (tgt_out != td.PAD).sum().double()])
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
    for idx in td.token_batches(lengths, hp.beam_max_tokens):
        src = td.pad_batch([encoded[i][0] for i in idx], device)
        with amp:
            out = seq2seq.beam_search(model, src, hp.beam, seq2seq.max_lengths(
                src, hp.max_len_a, hp.max_len_b), hp.length_penalty)
        for i, ids in zip(idx, out):
            hyps[i] = tok.decode(ids)
    model.train()
    refs = [t for _, t in pairs]
    return {"bleu": sacrebleu.corpus_bleu(hyps, [refs]).score,
            "copy_bleu": sacrebleu.corpus_bleu([s for s, _ in pairs], [refs]).score,
            "bleu_sentences": len(pairs)}, hyps


# ---------------------------------------------------------------- the run


def run(cfg: DictConfig) -> dict | None:
    hp = cfg.task.scales[cfg.scale.name]
    rank, world, local_rank = common.init_distributed()
    device = common.pick_device(cfg.device, local_rank)
    common.set_seed(cfg.seed)
    wall0 = common.now()

    splits = load_splits(cfg, hp)
    cache = cfg.task.get("bpe_cache_dir") or cfg.run_dir
    if world > 1 and rank != 0:  # rank 0 trains (and caches) the BPE, the others load it
        torch.distributed.barrier()
    tok = td.train_bpe(splits["train"], hp.vocab_size, cache)
    if world > 1 and rank == 0:
        torch.distributed.barrier()
    train = td.encode(tok, splits["train"], hp.max_len)
    valid = td.encode(tok, splits["valid"], hp.max_len)
    test_pairs = splits["test"][: hp.bleu_sentences or None]
    test = td.encode(tok, test_pairs, hp.max_len)
    batches = td.token_batches(td.pair_lengths(train), hp.max_tokens)
    valid_batches = td.token_batches(td.pair_lengths(valid), hp.max_tokens)
    steps_per_epoch = len(batches) // world
    total = hp.epochs * steps_per_epoch
    log.info("%d/%d/%d pairs, vocab %d, %d batches of <= %d tokens per epoch, %d steps",
             len(train), len(valid), len(test), tok.get_vocab_size(), len(batches),
             hp.max_tokens, total)

    model = seq2seq.Seq2Seq(tok.get_vocab_size(), **hp.model).to(device)
    groups = common.param_groups(model, hp.weight_decay)
    # The YAML names the optimizer; the task sets its hyperparameters, the same for every one.
    optimizer = optimizers.build_optimizer(cfg, groups, lr=hp.lr, betas=hp.betas, eps=hp.eps,
                                       weight_decay=hp.weight_decay)

    def set_lr(step):  # inverse-sqrt with linear warm-up, peaking at hp.lr; a function of step
        for g in optimizer.param_groups:
            g["lr"] = hp.lr * common.inverse_sqrt(step, hp.warmup_steps)

    amp = torch.autocast(device.type, dtype=torch.bfloat16,
                         enabled=bool(hp.get("amp", False)) and device.type == "cuda")
    raw = model
    if world > 1:
        model = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[local_rank] if device.type == "cuda" else None)

    # ---- resume
    step, elapsed, wandb_id = 0, 0.0, None
    resume = common.find_resume(cfg)
    if resume is not None:
        ckpt = common.load_checkpoint(resume)
        raw.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        common.set_rng_state(ckpt["rng"])
        step, elapsed, wandb_id = ckpt["step"], ckpt["elapsed"], ckpt["wandb_id"]
        log.info("resumed from %s at step %d/%d", resume, step, total)
    logger = common.Logger(cfg, run_id=wandb_id, enabled=rank == 0)

    def checkpoint(name="ckpt.pt"):
        path = Path(cfg.run_dir) / name
        if rank == 0:
            common.save_checkpoint(path, {
                "model": raw.state_dict(), "optimizer": optimizer.state_dict(), "step": step,
                "data_position": {"epoch": step // steps_per_epoch,
                                  "batch": step % steps_per_epoch},
                "rng": common.rng_state(), "elapsed": elapsed + common.now() - wall0,
                "wandb_id": logger.id, "config": common.OmegaConf.to_container(cfg, resolve=True),
            })
        return path

    # ---- the loop
    stop, restore_signals = common.install_stop_signals()
    step_ms, tokens, train_s = [], 0, 0.0
    metrics, loss = {}, None
    bar = common.progress(total, step)
    try:
        while step < total:
            epoch, start = divmod(step, steps_per_epoch)
            for idx in train_batches(batches, cfg.seed, epoch, start, rank, world):
                t0 = common.now()
                set_lr(step)
                src, tgt_in, tgt_out = td.collate(train, idx, device)
                with amp:
                    logits = model(src, tgt_in)
                loss = F.cross_entropy(logits.float().flatten(0, 1), tgt_out.flatten(),
                                       ignore_index=td.PAD, label_smoothing=hp.label_smoothing)
                common.check_finite(loss, step, lambda: checkpoint("crash.pt"), cfg)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if hp.clip_grad:
                    torch.nn.utils.clip_grad_norm_(model.parameters(), hp.clip_grad)
                common.synchronize(device)
                t1 = common.now()
                optimizer.step()
                common.synchronize(device)
                t2 = common.now()
                step += 1
                step_ms.append(1e3 * (t2 - t1))
                tokens += int((tgt_out != td.PAD).sum()) * world  # approx. when ranks differ
                train_s += t2 - t0
                loss_value = loss.item()
                logger.log({"loss": loss_value, "lr": optimizer.param_groups[0]["lr"],
                            "step_time_ms": step_ms[-1], "tokens_per_s": tokens / train_s},
                           step=step)
                bar.update(1)
                bar.set_postfix(loss=f"{loss_value:.3f}", tok_s=f"{tokens / train_s:.0f}")
                if step % hp.eval_every == 0 or step == total:
                    metrics = valid_loss(model, valid, valid_batches, device, amp, rank, world)
                    logger.log({f"eval/{k}": v for k, v in metrics.items()}, step=step)
                    log.info("step %d/%d epoch %d loss %.4f valid_loss %.4f valid_ppl %.2f",
                             step, total, epoch, loss_value, metrics["valid_loss"],
                             metrics["valid_ppl"])
                if cfg.ckpt_every and step % cfg.ckpt_every == 0 and step < total:
                    checkpoint()
                if common.stop_requested(stop, step, cfg, world, device):
                    common.finish_stopped(stop, step, total, checkpoint(), bar, logger)
                    return None
        bar.close()
        if not metrics:  # resumed a finished run: evaluate again for the record
            metrics = valid_loss(model, valid, valid_batches, device, amp, rank, world)
        checkpoint()
        # BLEU once, at the end: beam search costs more than the validation loss.
        t0 = common.now()
        scores, hyps = bleu(raw, tok, test_pairs, test, hp, device, amp)
        metrics = {**scores, **metrics}
        log.info("BLEU %.2f (copy-the-source %.2f) on %d test sentences, beam %d, %.0f s",
                 scores["bleu"], scores["copy_bleu"], len(test_pairs), hp.beam,
                 common.now() - t0)
        logger.log({f"eval/{k}": v for k, v in scores.items()}, step=step)
        if rank == 0:
            (Path(cfg.run_dir) / "test_hypotheses.txt").write_text(
                "".join(h + "\n" for h in hyps), encoding="utf-8")
    except BaseException:
        bar.close()
        logger.finish(exit_code=1)
        raise
    finally:
        restore_signals()

    # ---- the record (finished runs only)
    peak, peak_kind = common.peak_memory(device)
    timed = step_ms[1:] or step_ms  # the first step allocates state (and compiles, for peers)
    record = records.make_record(
        cfg,
        metrics={**metrics, "train_loss": loss.item() if loss is not None else None},
        memory={"state_bytes": optimizers.state_bytes(optimizer), "peak_bytes": peak,
                "peak_kind": peak_kind},
        time_={"wall_s": elapsed + common.now() - wall0,
               "step_ms_mean": float(np.mean(timed)) if timed else None,
               "throughput": tokens / train_s if train_s else None,
               "train_s": train_s,  # forward, backward and step time since this process started
               "throughput_unit": "target tokens/s", "steps": total},
        wandb_path=logger.path,
    )
    if rank == 0:
        path = records.record_path(cfg)
        records.write_json_atomic(path, record)
        log.info("BLEU %.2f copy %.2f valid_ppl %.2f; record %s", metrics["bleu"],
                 metrics["copy_bleu"], metrics["valid_ppl"], path)
    logger.finish(record)
    return record
