"""Refuse before training, never after: bad config values, unwritable folders and finished
cells each end the command with one line naming the key or the path, exit status 1, no
traceback, no record and no run folder.

The table drives run.py itself in this process (runpy, as ``python run.py``): each case costs
a Hydra compose, not a Python start with torch (~15 s on a busy CPU). A few cases also run as
real subprocesses, concurrently, to pin down the exit status and stderr of the command line.
"""

import os
import subprocess
import sys

import pytest
from harness_utils import ROOT, RUN_PY

from experiments import errors, validate
from experiments.config import compose

# (overrides, what the one line must name); every case is smoke scale, optim=adamw32.
BAD = [
    (["seed=abc"], "seed=abc"),
    (["seed=1.5"], "seed=1.5"),
    (["seed=-1"], "seed=-1"),
    (["seed=true"], "seed=true"),
    (["scale.epochs=0"], "scale.epochs=0"),
    (["scale.epochs=-1"], "scale.epochs=-1"),
    (["scale.epochs=2.5"], "scale.epochs=2.5"),
    (["scale.batch_size=1000"], "scale.batch_size=1000"),
    (["scale.batch_size=0"], "scale.batch_size=0"),
    (["scale.batch_size=abc"], "scale.batch_size=abc"),
    (["+scale.micro_batch_size=3"], "scale.micro_batch_size=3"),
    (["scale.lr=fast"], "scale.lr=fast"),
    (["scale.lr=0"], "scale.lr=0"),
    (["scale.lr=-0.001"], "scale.lr=-0.001"),
    (["scale.lr=inf"], "scale.lr=inf"),
    (["beta1=1.5"], "beta1=1.5"),
    (["beta1=1.0"], "beta1=1.0"),
    (["beta1=-0.1"], "beta1=-0.1"),
    (["scale.beta2=1.0"], "scale.beta2=1.0"),
    (["scale.beta2=-0.1"], "scale.beta2=-0.1"),
    (["scale.eps=0"], "scale.eps=0"),
    (["scale.weight_decay=-1"], "scale.weight_decay=-1"),
    (["scale.warmup_steps=-2"], "scale.warmup_steps=-2"),
    (["scale.eval_every=0"], "scale.eval_every=0"),
    (["scale.label_smoothing=1.0"], "scale.label_smoothing=1.0"),
    (["scale.clip_grad=0"], "scale.clip_grad=0"),
    (["scale.n_train=0"], "scale.n_train=0"),
    (["scale.model.embed_dim=0"], "scale.model.embed_dim=0"),
    (["scale.model.drop_path_rate=1.5"], "scale.model.drop_path_rate=1.5"),
    (["device=banana"], "device=banana"),
    (["ckpt_every=-1"], "ckpt_every=-1"),
    (["stop_at_step=0"], "stop_at_step=0"),
    (["stop_at_step=-5"], "stop_at_step=-5"),
    (["resume=maybe"], "resume=maybe"),
    (["overwrite=yes"], "overwrite=yes"),
    (["task.workers=-1"], "task.workers=-1"),
    (["logger=wandb", "logger.mode=sometimes"], "logger.mode=sometimes"),
    (["task=dcn", "scale.eval_batch_size=0"], "scale.eval_batch_size=0"),
    (["task=dcn", "scale.mlp=[16,0]"], "scale.mlp=[16,0]"),
    (["task=dcn", "scale=small", "scale.split=[0.5,0.5,0.5]"], "scale.split=[0.5,0.5,0.5]"),
    (["task=transformer", "scale.max_tokens=0"], "scale.max_tokens=0"),
    (["task=transformer", "scale.beam=0"], "scale.beam=0"),
    (["task=llama", "scale.epochs=-1"], "scale.epochs=-1"),
    (["task=llama", "scale.batch_size=128"], "scale.batch_size=128"),
    (["task=llama", "scale.warmup_ratio=2"], "scale.warmup_ratio=2"),
]


def refused(code, output, names, tmp_path):
    """One line ``error: ...`` naming ``names`` (the interpreter prints a string exit code on
    stderr and exits 1), no traceback, nothing written."""
    assert isinstance(code, str) and code.startswith("error: "), (code, output[-2000:])
    assert "\n" not in code and names in code, code
    assert "Traceback" not in output and "Error executing job" not in output, output
    assert not (tmp_path / "records").exists() or not list((tmp_path / "records").rglob("*.json"))
    assert not (tmp_path / "run").exists() and not (tmp_path / "outputs").exists()


@pytest.mark.parametrize("overrides, names", BAD, ids=[" ".join(o) for o, _ in BAD])
def test_a_bad_value_is_refused_in_one_line_before_anything_runs(cli, tmp_path, overrides,
                                                                   names):
    refused(*cli(*overrides), names, tmp_path)


def test_a_batch_the_ranks_cannot_share_is_refused(cli, tmp_path, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "3")
    refused(*cli(), "scale.batch_size=8 is not divisible by the world size 3", tmp_path)


@pytest.mark.parametrize("recipe", sorted(p.stem for p in (ROOT / "conf" / "recipe")
                                          .glob("*.yaml")))
def test_every_shipped_recipe_passes_the_checks(recipe):
    task, scale = recipe.rsplit("_", 1)
    validate.check_config(compose([f"task={task}", f"scale={scale}"]))


def test_llama_may_evaluate_the_pretrained_model_with_zero_epochs():
    validate.check_config(compose(["task=llama", "scale=medium", "scale.epochs=0"]))
    with pytest.raises(errors.ConfigError, match="scale.epochs=0"):
        validate.check_config(compose(["task=swin", "scale=smoke", "scale.epochs=0"]))


def test_a_batch_larger_than_the_fixed_data_set_is_refused_before_loading_it():
    # the small Swin recipe's CIFAR-10 split fixes 8,000 training images (train_examples)
    validate.check_config(compose(["task=swin", "scale=small", "scale.batch_size=8000"]))
    with pytest.raises(errors.ConfigError, match="more than the 8000 training examples"):
        validate.check_config(compose(["task=swin", "scale=small", "scale.batch_size=8001"]))


def test_an_unwritable_records_folder_is_refused_before_training(cli, tmp_path):
    (tmp_path / "file").write_text("")
    code, out = cli(f"records_dir={tmp_path / 'file' / 'runs'}")
    refused(code, out, f"records folder {tmp_path / 'file' / 'runs'}", tmp_path)
    assert "records_dir=" in code


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_read_only_records_folder_is_refused_before_training(cli, tmp_path):
    (tmp_path / "ro").mkdir(mode=0o555)
    refused(*cli(f"records_dir={tmp_path / 'ro'}"), "cannot be written", tmp_path)


def test_an_unwritable_outputs_folder_is_refused_in_one_line(cli, tmp_path, monkeypatch):
    (tmp_path / "file").write_text("")
    monkeypatch.setenv("SOLO_OUTPUTS_DIR", str(tmp_path / "file" / "outputs"))
    code, out = cli(run_dir=None)
    refused(code, out, f"run folder {tmp_path / 'file' / 'outputs'}", tmp_path)
    assert "SOLO_OUTPUTS_DIR=" in code


def test_debug_shows_the_traceback(cli, tmp_path, monkeypatch):
    monkeypatch.setenv("SOLO_DEBUG", "1")
    code, out = cli("seed=-1")
    assert code.startswith("error: seed=-1") and "Traceback" in out and "ConfigError" in out
    assert not (tmp_path / "run").exists()


def test_the_command_line_exits_1_with_one_line_on_stderr(tmp_path):
    """Real processes, run together: the exit status and stderr the user sees."""
    (tmp_path / "file").write_text("")
    cases = {"seed=-1": ["seed=-1"], "records folder": [f"records_dir={tmp_path / 'file'}"]}
    env = {**os.environ, "SOLO_RECORDS_DIR": str(tmp_path / "records"), "WANDB_MODE": "offline"}
    procs = {name: subprocess.Popen(
        [sys.executable, RUN_PY, "scale=smoke", "optim=adamw32", "logger=none",
         f"hydra.run.dir={tmp_path / 'run'}", *args], stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True, env=env, cwd=tmp_path) for name, args in cases.items()}
    for name, proc in procs.items():
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 1, err[-2000:]
        assert err.strip().count("\n") == 0 and err.startswith("error: ") and name in err, err
    assert not (tmp_path / "run").exists() and not (tmp_path / "records").exists()


def test_a_batch_larger_than_the_loaded_data_is_refused_before_training(tmp_path):
    """Where the data's size is known only once loaded (here 1,000 micro-batches of 96 tokens
    per step, more than the smoke corpus holds), the run is refused before the first step."""
    from omegaconf import open_dict

    from experiments.transformer import run

    cfg = compose(["task=transformer", "scale=smoke", "optim=adamw32", "logger=none",
                   "scale.max_tokens=96000", "+scale.micro_tokens=96"])
    with open_dict(cfg):
        cfg.run_dir, cfg.records_dir = str(tmp_path / "run"), str(tmp_path / "records")
    # the task's data check (experiments/transformer/data.py) speaks first; the scaffold's
    # steps-per-epoch check is the net under every task
    with pytest.raises(errors.RunError, match=r"(fewer than one step|more than one epoch).*"
                                              r"scale\.max_tokens"):
        run.main(cfg)
    assert not (tmp_path / "run" / "ckpt.pt").exists() and not (tmp_path / "records").exists()
