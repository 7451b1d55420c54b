"""A solo optimizer in the Hugging Face Trainer: train, checkpoint, resume, check it is exact.

    python examples/hf_trainer.py --preset solo_4_2bit --steps 8

The one line to copy::

    Trainer(model, args, train_dataset=data,
            optimizer_cls_and_kwargs=solo.presets.for_hf("solo_4_2bit", lr=3e-3))

Weight decay and the LR schedule come from ``TrainingArguments`` as usual; the learning rate
comes from ``for_hf`` (the Trainer does not pass ``TrainingArguments.learning_rate`` to an
optimizer given this way). The script trains a tiny Llama (random weights from a
``LlamaConfig``, ~90k parameters, CPU) on synthetic token sequences fed as ``input_ids`` (no
tokenizer, no network) three times: straight through, stopped after a checkpoint as a
preempted job would be, and resumed from that checkpoint in a fresh model and Trainer. The
resumed run must end with the straight run's parameters and optimizer state, bit for bit.
"""

from __future__ import annotations

import argparse
import os
import tempfile

import torch
from transformers import (
    LlamaConfig,
    LlamaForCausalLM,
    Trainer,
    TrainerCallback,
    TrainingArguments,
)

import solo

VOCAB = 128
SEQ_LEN = 32


class SyntheticTokens(torch.utils.data.Dataset):
    """Synthetic token sequences, not text: each is an arithmetic progression modulo the
    vocabulary with a random start and stride, so the next token follows from the context
    and the loss falls within a few steps."""

    def __init__(self, n: int = 256, seed: int = 0):
        g = torch.Generator().manual_seed(seed)
        start = torch.randint(VOCAB, (n, 1), generator=g)
        stride = torch.randint(1, 8, (n, 1), generator=g)
        self.ids = (start + stride * torch.arange(SEQ_LEN)) % VOCAB

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> dict:
        return {"input_ids": self.ids[i], "labels": self.ids[i]}


def tiny_llama(seed: int = 0) -> LlamaForCausalLM:
    """A 2-layer Llama with random weights (~90k parameters; every tensor a whole number of
    128-element blocks or smaller than one)."""
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=VOCAB, hidden_size=64, intermediate_size=128,
                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=SEQ_LEN)
    return LlamaForCausalLM(config)


class StopAt(TrainerCallback):
    """Ends training after global step ``step``, once its checkpoint is written (the Trainer
    saves after ``on_step_end``): what a preempted job leaves behind."""

    def __init__(self, step: int):
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            control.should_training_stop = True
        return control


def train(preset: str, steps: int, out_dir: str, *, lr: float = 3e-3, save_steps: int = 0,
          stop_at: int = 0, resume: str | None = None, seed: int = 0) -> Trainer:
    """Trains a fresh :func:`tiny_llama` for ``steps`` optimizer steps (batch 8, linear LR
    decay after 2 warm-up steps, weight decay 0.01) with solo preset ``preset``; checkpoints
    every ``save_steps`` steps into ``out_dir`` (0: never), stops after step ``stop_at`` (0:
    runs to the end), resumes from checkpoint folder ``resume`` if given."""
    args = TrainingArguments(
        output_dir=out_dir, max_steps=steps, per_device_train_batch_size=8,
        lr_scheduler_type="linear", warmup_steps=2, weight_decay=0.01, logging_steps=1,
        save_strategy="steps" if save_steps else "no", save_steps=save_steps or steps,
        seed=seed, use_cpu=True, report_to="none", disable_tqdm=True)
    trainer = Trainer(model=tiny_llama(seed), args=args, train_dataset=SyntheticTokens(seed=seed),
                      optimizer_cls_and_kwargs=solo.presets.for_hf(preset, lr=lr),
                      callbacks=[StopAt(stop_at)] if stop_at else None)
    trainer.train(resume_from_checkpoint=resume)
    return trainer


def losses(trainer: Trainer) -> list[float]:
    """The training loss of every logged step."""
    return [r["loss"] for r in trainer.state.log_history if "loss" in r]


def differences(a, b, path: str = "") -> list[str]:
    """Paths where two nested dicts/lists of tensors differ (``torch.equal``: bits, shape,
    dtype); empty when identical."""
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        same = (isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor)
                and a.dtype == b.dtype and torch.equal(a, b))
        return [] if same else [path]
    if isinstance(a, dict) and isinstance(b, dict):
        if a.keys() != b.keys():
            return [f"{path} (keys)"]
        return [d for k in a for d in differences(a[k], b[k], f"{path}[{k!r}]")]
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        if len(a) != len(b):
            return [f"{path} (length)"]
        return [d for i, (x, y) in enumerate(zip(a, b)) for d in differences(x, y, f"{path}[{i}]")]
    return [] if a == b else [path]


def resume_check(preset: str, steps: int, out_dir: str, *, save_at: int | None = None) -> dict:
    """Runs ``preset`` straight for ``steps`` steps, then again stopped after a checkpoint at
    step ``save_at`` (default ``steps // 2``), then resumed from it to ``steps``.

    Returns the straight and resumed trainers and the paths where the resumed model's
    parameters (``"params"``) and optimizer state dict (``"optimizer"``) differ from the
    straight run's (both empty when the resume is bit-exact).
    """
    save_at = save_at or steps // 2
    if not 0 < save_at < steps:
        raise ValueError(f"save_at={save_at} must lie strictly between 0 and steps={steps}")
    straight = train(preset, steps, os.path.join(out_dir, "straight"))
    run_dir = os.path.join(out_dir, "preempted")
    train(preset, steps, run_dir, save_steps=save_at, stop_at=save_at)
    # The relaunched job: same arguments, told where to resume from.
    resumed = train(preset, steps, run_dir, save_steps=save_at,
                    resume=os.path.join(run_dir, f"checkpoint-{save_at}"))
    return {
        "straight": straight,
        "resumed": resumed,
        "params": differences(straight.model.state_dict(), resumed.model.state_dict()),
        "optimizer": differences(straight.optimizer.state_dict(), resumed.optimizer.state_dict()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="solo_4_2bit", choices=list(solo.PRESETS))
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--out", default=None, help="checkpoint folder (default: a temporary one)")
    a = parser.parse_args()
    if a.steps < 2:
        parser.error("--steps must be at least 2 (the checkpoint is taken half way)")
    with tempfile.TemporaryDirectory() as tmp:
        check = resume_check(a.preset, a.steps, a.out or tmp)
    straight, resumed = check["straight"], check["resumed"]
    print("loss, straight:", " ".join(f"{x:.4f}" for x in losses(straight)))
    print("loss, resumed: ", " ".join(f"{x:.4f}" for x in losses(resumed)))
    opt = straight.optimizer.optimizer  # the solo optimizer inside accelerate's wrapper
    print(f"state bytes: {solo.state_bytes(opt)['total']:,} (predicted "
          f"{solo.estimate_state_bytes(straight.model, a.preset)['total']:,})")
    exact = not check["params"] and not check["optimizer"]
    print("resume bit-identical (parameters and optimizer state):", "yes" if exact else
          f"NO; differing: {check['params'] + check['optimizer']}")
    raise SystemExit(0 if exact else 1)


if __name__ == "__main__":
    main()
