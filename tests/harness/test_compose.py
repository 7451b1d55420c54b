"""run.py and the code outside a Hydra job (tests, sweeps, figures) compose conf/ one way:
experiments.config.compose gives the config that run.py hands the task's runner."""

from omegaconf import OmegaConf

from experiments.config import RUNTIME_KEYS, compose

JOBS = []


def capture(cfg):
    """A runner (task.runner=test_compose.capture) that keeps the config it is handed."""
    JOBS.append(cfg)


def test_run_py_hands_the_runner_the_config_compose_gives(cli, tmp_path):
    JOBS.clear()
    overrides = ["task=dcn", "beta1=0.9", "task.runner=test_compose.capture"]
    code, out = cli(*overrides, run_dir=tmp_path / "run")
    assert code == 0, out
    (job,) = JOBS
    composed = compose(["scale=smoke", "optim=adamw32", "logger=none",
                        f"hydra.run.dir={tmp_path / 'run'}", *overrides])
    # unresolved: the values Hydra knows only during the job are plain values in both
    assert OmegaConf.to_container(job) == OmegaConf.to_container(composed)
    assert (job.optim_name, job.run_dir) == ("adamw32", str(tmp_path / "run"))
    assert job.variant == "beta1=0.9,task.runner=test_compose.capture"


def test_a_composed_config_keeps_its_values_after_another_compose(tmp_path):
    first = compose(["task=dcn", "optim=solo_2bit", "beta1=0.9"])
    compose(["task=swin", "optim=adamw32", "scale.epochs=3"], run_dir=tmp_path)
    assert (first.optim_name, first.variant) == ("solo_2bit", "beta1=0.9")
    assert first.run_dir.endswith("small/dcn/solo_2bit/beta1=0.9/seed0")
    assert not any(OmegaConf.is_interpolation(first, key) for key in RUNTIME_KEYS)
