"""Refuse before training, never after: every config value checked against its meaning, the
records and run folders checked writable, and a finished cell's record guarded.

:func:`preflight` runs three times, each a no-op once passed: from conf/config.yaml's Hydra
callback (:class:`Preflight`, before Hydra makes the run folder), in run.py (before the task's
libraries load; multirun jobs skip the callback) and in the scaffold (``Run``, which every runner
opens, so in-process callers are checked too). Each failure is one line naming the key, the
value and what is allowed, or the path and the fix.
"""

import math
import os
import re
import tempfile
import traceback
from pathlib import Path

from omegaconf import OmegaConf

from experiments import provenance, records
from experiments.errors import (
    ConfigError,
    DirtyTree,
    FolderNotWritable,
    RecordExists,
    RunError,
    debug,
)


def _int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _num(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


# A rule: (test of the value, what is allowed, in words).
INT_GE0 = (lambda v: _int(v) and v >= 0, "an integer >= 0")
INT_GE1 = (lambda v: _int(v) and v >= 1, "an integer >= 1")
POSITIVE = (lambda v: _num(v) and v > 0, "a number > 0")
NON_NEGATIVE = (lambda v: _num(v) and v >= 0, "a number >= 0")
FRACTION = (lambda v: _num(v) and 0 <= v <= 1, "a number in [0, 1]")
BELOW_ONE = (lambda v: _num(v) and 0 <= v < 1, "a number in [0, 1)")
BOOL = (lambda v: isinstance(v, bool), "true or false")


def optional(rule):
    return (lambda v: v is None or rule[0](v), f"null or {rule[1]}")


def one_of(*names):
    return (lambda v: v in names, " or ".join(names))


def list_of(rule, n: int | None = None):
    size = f"{n} " if n else ""
    return (lambda v: isinstance(v, list) and (n is None or len(v) == n) and len(v) > 0
            and all(rule[0](x) for x in v), f"a list of {size}values, each {rule[1]}")


SPLIT = (lambda v: list_of(POSITIVE, 3)[0](v) and abs(sum(v) - 1) < 1e-9,
         "three fractions > 0 (train, val, test) that sum to 1")
DEVICE = (lambda v: isinstance(v, str) and re.fullmatch(r"auto|cpu|cuda(:\d+)?", v) is not None,
          "auto, cpu, cuda or cuda:<index>")

# key -> rule, for every knob of conf/ whose bad value would reach a library (a key absent from
# the chosen task or recipe is skipped).
RULES = {
    "seed": INT_GE0,
    "beta1": optional(BELOW_ONE),
    "resume": one_of("auto", "never"),
    "overwrite": BOOL,
    "allow_dirty": BOOL,
    "device": DEVICE,
    "ckpt_every": (INT_GE0[0], "an integer >= 0 (0: only the final checkpoint)"),
    "stop_at_step": optional(INT_GE1),
    "logger.mode": one_of("offline", "online", "disabled"),
    "task.workers": INT_GE0,
    "task.main_metric": (lambda v: isinstance(v, str) and re.fullmatch(r"[A-Za-z_]\w*", v)
                         is not None, "the name of a metric in the task's records, e.g. top1"),
    "scale.epochs": INT_GE1,
    "scale.max_steps": optional(INT_GE1),
    "scale.batch_size": INT_GE1,
    "scale.micro_batch_size": optional(INT_GE1),
    "scale.max_tokens": INT_GE1,
    "scale.micro_tokens": optional(INT_GE1),
    "scale.eval_batch_size": INT_GE1,
    "scale.lr": POSITIVE,
    "scale.lr_base_batch": INT_GE1,
    "scale.beta2": BELOW_ONE,
    "scale.eps": POSITIVE,
    "scale.weight_decay": NON_NEGATIVE,
    "scale.warmup_steps": INT_GE0,
    "scale.warmup_epochs": INT_GE0,
    "scale.warmup_ratio": FRACTION,
    "scale.warmup_lr": NON_NEGATIVE,
    "scale.min_lr": NON_NEGATIVE,
    "scale.min_lr_ratio": FRACTION,
    "scale.clip_grad": optional(POSITIVE),
    "scale.label_smoothing": BELOW_ONE,
    "scale.eval_every": INT_GE1,
    "scale.n_train": INT_GE1,
    "scale.n_valid": INT_GE1,
    "scale.n_test": INT_GE1,
    "scale.n_heldout": INT_GE1,
    "scale.max_len": INT_GE1,
    "scale.vocab_size": INT_GE1,
    "scale.shift": INT_GE0,
    "scale.split": SPLIT,
    "scale.min_count": INT_GE1,
    "scale.embedding_dim": (lambda v: v == "auto" or INT_GE1[0](v), "auto or an integer >= 1"),
    "scale.cross_layers": INT_GE0,
    "scale.mlp": list_of(INT_GE1),
    "scale.cpu_threads": optional(INT_GE1),
    "scale.beam": INT_GE1,
    "scale.length_penalty": NON_NEGATIVE,
    "scale.max_len_a": NON_NEGATIVE,
    "scale.max_len_b": INT_GE0,
    "scale.beam_max_tokens": INT_GE1,
    "scale.bleu_sentences": optional(INT_GE1),
    "scale.mixup": NON_NEGATIVE,
    "scale.cutmix": NON_NEGATIVE,
    "scale.mixup_prob": FRACTION,
    "scale.mixup_switch_prob": FRACTION,
    "scale.reprob": FRACTION,
    "scale.recount": INT_GE1,
    "scale.color_jitter": optional(NON_NEGATIVE),
    "scale.eval.batch_size": INT_GE1,
    "scale.eval.mmlu_per_subject": INT_GE1,
    **{f"scale.model.{k}": INT_GE1 for k in (
        "img_size", "patch_size", "window_size", "embed_dim", "in_chans", "num_classes",
        "d_model", "ffn", "heads", "enc_layers", "dec_layers", "hidden_size",
        "intermediate_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
        "max_position_embeddings")},
    "scale.model.depths": list_of(INT_GE1),
    "scale.model.num_heads": list_of(INT_GE1),
    "scale.model.drop_path_rate": BELOW_ONE,
    "scale.model.dropout": BELOW_ONE,
}
# Where a task gives a key another meaning.
TASK_RULES = {
    "llama": {"scale.epochs": (INT_GE0[0], "an integer >= 0 (0: evaluate the pretrained "
                                           "model)")},
}
_ABSENT = object()


def show(value) -> str:
    """A value as the user would type it on the command line."""
    if isinstance(value, bool) or value is None:
        return {True: "true", False: "false", None: "null"}[value]
    if isinstance(value, list):
        return "[" + ",".join(show(v) for v in value) + "]"
    return str(value)


def check_config(cfg, here: bool = True) -> None:
    """Raise ConfigError for the first value that breaks its rule (:data:`RULES`), then for a
    global batch that does not divide over the ranks or exceeds the training data. ``here``:
    the run is on this machine, so ``device=cuda`` needs a GPU here (False: a cell to submit)."""
    rules = {**RULES, **TASK_RULES.get(OmegaConf.select(cfg, "task.name"), {})}
    for key, (ok, allowed) in rules.items():
        value = OmegaConf.select(cfg, key, default=_ABSENT)
        if value is _ABSENT:
            continue
        if OmegaConf.is_config(value):
            value = OmegaConf.to_container(value, resolve=True)
        if not ok(value):
            raise ConfigError(f"{key}={show(value)} is not allowed: expected {allowed}")
    device = cfg.get("device")
    if here and device and device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise ConfigError(f"device={device} but no CUDA GPU is visible to torch: use "
                              "device=cpu (or auto)")
    _check_batch(cfg)


def _check_batch(cfg) -> None:
    hp = cfg.scale
    key = "scale.batch_size" if "batch_size" in hp else "scale.max_tokens"
    micro_key = "scale.micro_batch_size" if "batch_size" in hp else "scale.micro_tokens"
    batch, micro = OmegaConf.select(cfg, key), OmegaConf.select(cfg, micro_key)
    if batch is None:
        return
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if batch % world:
        raise ConfigError(f"{key}={batch} is not divisible by the world size {world}: use a "
                          f"multiple of {world} (e.g. {key}={batch // world * world or world})")
    share = batch // world
    if micro and share % min(micro, share):
        raise ConfigError(f"{micro_key}={micro} does not divide a rank's share of the global "
                          f"batch ({key}={batch} / {world} ranks = {share}): use a divisor of "
                          f"{share}")
    # n_train: a size the recipe chooses; train_examples: one its fixed data set imposes
    n = hp.get("n_train") or hp.get("train_examples")
    if key == "scale.batch_size" and n and batch > n:
        raise ConfigError(f"{key}={batch} is more than the {n} training examples of "
                          f"scale={hp.name} (not one step per epoch): use at most {n}")


def unwritable(folder: Path) -> str | None:
    """Why ``folder`` cannot be written (or created), or None when it can. Tried, not asked
    of the permission bits: root passes those, and a read-only mount fails only on write."""
    probe = Path(os.path.abspath(folder))
    while not probe.exists() and probe.parent != probe:
        probe = probe.parent
    if not probe.is_dir():
        return f"{probe} is not a folder"
    try:
        with tempfile.TemporaryFile(dir=probe):
            pass
    except OSError as err:
        return f"{probe}: {err.strerror or err}"
    return None


def check_folders(cfg, run_dir: Path) -> None:
    """The record's folder and the run folder can be written (both created later, if new)."""
    folder = records.record_path(cfg).parent
    why = unwritable(folder)
    if why:
        raise FolderNotWritable(
            f"records folder {folder} cannot be written ({why}): make it writable, or write "
            "records elsewhere with records_dir=<folder> (or SOLO_RECORDS_DIR=<folder>)")
    why = unwritable(run_dir)
    if why:
        raise FolderNotWritable(
            f"run folder {run_dir} cannot be written ({why}): make it writable, or put runs "
            "elsewhere with SOLO_OUTPUTS_DIR=<folder> (or hydra.run.dir=<folder>)")


def check_record(cfg, run_dir: Path) -> None:
    """A cell that has a record is not trained again, and its record not replaced, unless
    ``overwrite=true``. The one exception, a rerun of the finished run folder itself (its
    ``done.json`` there, resume=auto), leaves the record as it is (experiments.scaffold)."""
    path = records.record_path(cfg)
    if cfg.get("overwrite", False) or not path.exists():
        return
    if cfg.resume == "never":
        raise RecordExists(f"record {path} exists and resume=never would train the cell again "
                           "and replace it: add overwrite=true to do so")
    if not (Path(run_dir) / "done.json").exists():
        raise RecordExists(f"record {path} exists: this cell is finished (its run folder is "
                           f"not {run_dir}); add overwrite=true to train it again and replace "
                           "the record, or records_dir=outputs/records to run it yourself and "
                           "keep the committed one (what make run does)")


def check_clean(cfg) -> None:
    """A record for the committed records folder (results/runs), at any scale but smoke, is made
    from committed code: the tables trust it as the code of its commit. ``allow_dirty=true``
    writes it anyway (its provenance names the changed files; the tables mark it dirty)."""
    snapshot = provenance.snapshot()  # the code as it is now, before the task's modules load
    if cfg.scale.name == "smoke" or cfg.get("allow_dirty", False):
        return
    if not provenance.committed(cfg.records_dir):
        return
    dirty = [f for f in snapshot["dirty_files"] or [] if provenance.affects(cfg.task.name, f)]
    if dirty:
        shown = ", ".join(dirty[:8]) + (f" and {len(dirty) - 8} more" if len(dirty) > 8 else "")
        raise DirtyTree(
            f"uncommitted changes in {shown}: a record in {cfg.records_dir} must come from "
            "committed code; commit them, write the record elsewhere (records_dir=<folder>), or "
            "add allow_dirty=true (the record and the tables then say it is dirty)")


def preflight(cfg, run_dir) -> None:
    """Every check of this module, in order; raises a RunError subclass on the first failure."""
    check_config(cfg)
    check_record(cfg, Path(run_dir))
    check_clean(cfg)
    check_folders(cfg, Path(run_dir))


try:
    from hydra.experimental.callback import Callback
except ImportError:  # readers of records need neither hydra nor this callback
    Callback = object


class Preflight(Callback):
    """conf/config.yaml's Hydra callback: :func:`preflight` before Hydra makes the run folder,
    so a refused run leaves none behind."""

    def on_run_start(self, config, **kwargs) -> None:
        from hydra.core.hydra_config import HydraConfig

        HydraConfig.instance().set_config(config)  # for ${hydra:...} in the run's keys
        try:
            preflight(config, Path(str(OmegaConf.select(config, "hydra.run.dir"))))
        except RunError as err:  # Hydra turns a callback's exceptions into warnings: exit here
            if debug():
                traceback.print_exc()
            raise SystemExit(f"error: {err}") from None
