"""A sweep file (``scripts/sweeps/<name>.yaml``): load and check it, expand it into run.py cells.

Every mistake a user can make in the file (a typo'd key, an unknown task or optimizer, a
scalar where a list belongs, an override Hydra cannot apply) is a :class:`SweepError` that names
the file, the key and the fix, raised before anything runs or is submitted.
"""

from __future__ import annotations

import difflib
import itertools
import re
import shlex
import sys
from pathlib import Path

import yaml

from experiments.errors import ConfigError, RunError

ROOT = Path(__file__).resolve().parents[1]
SWEEPS = ROOT / "scripts" / "sweeps"

#: Top-level keys of a sweep file; ``tasks``, ``optims`` and ``seeds`` are required.
KEYS = ("name", "scale", "tasks", "optims", "seeds", "overrides", "fixed", "fixed_per_task",
        "resources", "parallel")
#: Resource keys that become ``#SBATCH`` flags; ``gpus`` and ``warn`` are handled apart.
SBATCH_FLAGS = {"time": "--time", "cpus": "--cpus-per-task", "mem": "--mem",
                "partition": "--partition", "account": "--account", "qos": "--qos"}
RESOURCE_KEYS = (*SBATCH_FLAGS, "gpus", "warn")


class SweepError(RunError):
    """A sweep file or a submit.py flag cannot work; the message names it and the fix."""


def known(group: str) -> list[str]:
    """The names Hydra accepts for ``<group>=`` (``task``, ``scale``, ``optim``)."""
    if group == "optim":
        from experiments.optimizers import OPTIMIZERS

        return list(OPTIMIZERS)
    return sorted(p.stem for p in (ROOT / "conf" / group).glob("*.yaml"))


def _unknown(what: str, word, choices) -> str:
    close = difflib.get_close_matches(str(word), [str(c) for c in choices], n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return f"unknown {what} {word!r}{hint}; allowed: {', '.join(map(str, choices))}"


def load_sweep(name: str) -> dict:
    """The checked sweep ``scripts/sweeps/<name>.yaml``, or the YAML file at path ``name``;
    ``file`` is added (the path, for messages) and ``name`` defaults to the file's stem."""
    path = Path(name)
    if not path.suffix:
        path = SWEEPS / f"{name}.yaml"
    if not path.is_file():
        have = ", ".join(sorted(p.stem for p in SWEEPS.glob("*.yaml")))
        raise SweepError(f"sweep not found: {path}; give one of {have}, or a path to a YAML file")
    try:
        sweep = yaml.safe_load(path.read_text())
    except OSError as e:
        raise SweepError(f"cannot read sweep {path}: {e.strerror}; check its permissions") from None
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        problem = getattr(e, "problem", None) or type(e).__name__
        raise SweepError(f"sweep {path} is not valid YAML{where} ({problem}); fix the file "
                         "(scripts/sweeps/smoke.yaml is a small example)") from None
    check_sweep(sweep, path)
    sweep.setdefault("name", path.stem)
    sweep["file"] = str(path)
    return sweep


def _str_list(value, where: str, example: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise SweepError(f"{where} must be a list of strings, e.g. {example}; got {value!r}")
    return value


def _no_repeats(values: list, where: str) -> None:
    seen = set()
    for v in values:
        if v in seen:
            raise SweepError(f"{where} lists {v!r} twice: two cells would share one run folder "
                             "and record; remove the repeat")
        seen.add(v)


def check_sweep(sweep, path: Path) -> None:
    """Raise :class:`SweepError` for the first thing in ``sweep`` (read from ``path``) that
    cannot expand into cells: its message names the key and the fix."""
    if not isinstance(sweep, dict):
        raise SweepError(f"sweep {path} must be a YAML mapping with keys tasks, optims and seeds "
                         "(scripts/sweeps/smoke.yaml is a small example)")
    for key in sweep:
        if key not in KEYS:
            raise SweepError(f"sweep {path}: " + _unknown("key", key, KEYS))
    for key, example in (("tasks", "[swin]"), ("optims", "[adamw32]"), ("seeds", "[0]")):
        if not sweep.get(key):
            raise SweepError(f"sweep {path}: missing or empty key {key!r}; add it as a list, "
                             f"e.g. {key}: {example}")
    for key, group, example in (("tasks", "task", "[swin, dcn]"),
                                ("optims", "optim", "[adamw32, solo_4_2bit]")):
        names = _str_list(sweep[key], f"sweep {path}: {key}", example)
        allowed = known(group)
        for n in names:
            if n not in allowed:
                raise SweepError(f"sweep {path}: {key}: " + _unknown(group, n, allowed))
        _no_repeats(names, f"sweep {path}: {key}")
    seeds = sweep["seeds"]
    if not isinstance(seeds, list) or not all(type(s) is int and s >= 0 for s in seeds):
        raise SweepError(f"sweep {path}: seeds must be a list of integers >= 0, e.g. [0, 1, 2]; "
                         f"got {seeds!r}")
    _no_repeats(seeds, f"sweep {path}: seeds")
    if "scale" in sweep and sweep["scale"] not in known("scale"):
        raise SweepError(f"sweep {path}: scale: "
                         + _unknown("scale", sweep["scale"], known("scale")))
    name = sweep.get("name", path.stem)
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", name):
        raise SweepError(f"sweep {path}: name must be letters, digits, '_', '.' or '-' (it names "
                         f"a folder and the Slurm jobs); got {name!r}")
    parallel = sweep.get("parallel")
    if parallel is not None and not (type(parallel) is int and parallel >= 1):
        raise SweepError(f"sweep {path}: parallel must be an integer >= 1; got {parallel!r}")
    overrides = sweep.get("overrides") or []
    if not isinstance(overrides, list):
        raise SweepError(f"sweep {path}: overrides must be a list of override lists, e.g. "
                         f"overrides: [[beta1=0.5], [beta1=0.9]]; got {overrides!r}")
    for ov in overrides:
        _str_list(ov, f"sweep {path}: each entry of overrides", "- [beta1=0.5]")
    _str_list(sweep.get("fixed") or [], f"sweep {path}: fixed", "fixed: [logger=none]")
    per_task = sweep.get("fixed_per_task") or {}
    if not isinstance(per_task, dict):
        raise SweepError(f"sweep {path}: fixed_per_task must map a task to its overrides, e.g. "
                         f"fixed_per_task: {{swin: [scale.epochs=10]}}; got {per_task!r}")
    for task, ov in per_task.items():
        if task not in sweep["tasks"]:
            raise SweepError(f"sweep {path}: fixed_per_task: "
                             + _unknown("task", task, sweep["tasks"]))
        _str_list(ov, f"sweep {path}: fixed_per_task: {task}", "[scale.epochs=10]")
    _check_resources(sweep.get("resources") or {}, path)


def _check_resources(res, path: Path) -> None:
    example = "resources: {smoke: {default: {cpus: 1, mem: 2G, time: '00:10:00'}}}"
    if not isinstance(res, dict):
        raise SweepError(f"sweep {path}: resources must map scale -> task -> keys, e.g. {example}")
    for scale, per_task in res.items():
        if scale not in known("scale"):
            raise SweepError(f"sweep {path}: resources: "
                             + _unknown("scale", scale, known("scale")))
        if not isinstance(per_task, dict):
            raise SweepError(f"sweep {path}: resources: {scale} must map 'default' or a task to "
                             f"its keys, e.g. {example}")
        for task, keys in per_task.items():
            where = f"sweep {path}: resources: {scale}: {task}"
            if task != "default" and task not in known("task"):
                raise SweepError(f"sweep {path}: resources: {scale}: "
                                 + _unknown("task", task, ["default", *known("task")]))
            if not isinstance(keys, dict):
                raise SweepError(f"{where} must be a mapping, e.g. {{cpus: 2, mem: 8G}}")
            for key, value in keys.items():
                if key not in RESOURCE_KEYS:
                    raise SweepError(f"{where}: " + _unknown("resource key", key, RESOURCE_KEYS))
                least = {"gpus": 0, "cpus": 1, "warn": 1}.get(key)
                if least is not None and not (type(value) is int and value >= least):
                    raise SweepError(f"{where}: {key} must be an integer >= {least}; "
                                     f"got {value!r}")


def resources(sweep: dict, scale: str, task: str) -> dict:
    """The sbatch resources of ``task`` at ``scale``: the scale's default, then the task's."""
    per_scale = (sweep.get("resources") or {}).get(scale) or {}
    return {**(per_scale.get("default") or {}), **(per_scale.get(task) or {})}


#: Environment of every sweep run unless the caller's sets it: PyTorch then backs CPU tensors of
#: 2 MB and more with transparent huge pages, which cuts the page faults of the large per-step
#: temporaries (measured: the system time of a small HSTU run from 13.5 s to 5.3 s, of a
#: Transformer one from 8.3 s to 2.4 s; user time and every metric unchanged; docs/speed.md).
THP_ENV = {"THP_MEM_ALLOC_ENABLE": "1"}

#: The batch script of one array job: each array task runs one manifest line.
ARRAY_SCRIPT = """#!/bin/bash
#SBATCH --job-name={job_name}
#SBATCH --array=1-{n}%{parallel}
#SBATCH --output={sweep_dir}/slurm-%A_%a.out
#SBATCH --open-mode=append
#SBATCH --requeue
#SBATCH --signal=B:USR2@{warn}
{resources}
# One manifest line per array task: run_dir <TAB> record <TAB> command.
set -u
cd {root}
IFS=$'\\t' read -r run_dir record cmd < <(sed -n "${{SLURM_ARRAY_TASK_ID}}p" {manifest})
mkdir -p "$run_dir"
rm -f "$run_dir/exit_code"
log="$run_dir/slurm-${{SLURM_ARRAY_JOB_ID}}_${{SLURM_ARRAY_TASK_ID}}.log"
echo "[$(date -Is)] job $SLURM_JOB_ID start (restart ${{SLURM_RESTART_COUNT:-0}}) on $(hostname): $cmd" >> "$log"
export PYTHONUNBUFFERED=1 THP_MEM_ALLOC_ENABLE=${{THP_MEM_ALLOC_ENABLE:-1}}
eval "exec $cmd" >> "$log" 2>&1 &
child=$!
# Slurm signals the batch shell (B:USR2, requeue/preemption TERM): pass them on to the run.
trap 'kill -USR2 $child 2>/dev/null' USR2
trap 'kill -TERM $child 2>/dev/null' TERM
wait $child; rc=$?
while kill -0 $child 2>/dev/null; do wait $child; rc=$?; done
echo "[$(date -Is)] job $SLURM_JOB_ID exit $rc" >> "$log"
echo $rc > "$run_dir/exit_code"
exit $rc
"""


def sbatch_lines(res: dict) -> str:
    """``#SBATCH`` lines for checked resources (``warn`` goes into ``--signal`` apart)."""
    lines = [f"#SBATCH {SBATCH_FLAGS[k]}={v}" for k, v in res.items() if k in SBATCH_FLAGS]
    if int(res.get("gpus", 0)):
        lines.append(f"#SBATCH --gres=gpu:{int(res['gpus'])}")
    return "\n".join(lines)


def _one_line(err: Exception) -> str:
    return " ".join(str(err).split(" Config search path")[0].split())


def check_scale(sweep: dict, scale: str) -> None:
    """Raise :class:`SweepError` unless every task of the sweep has a recipe at ``scale``
    (``conf/recipe/<task>_<scale>.yaml``)."""
    for task in sweep["tasks"]:
        if not (ROOT / "conf" / "recipe" / f"{task}_{scale}.yaml").is_file():
            have = sorted(p.stem.split("_", 1)[1] for p in (ROOT / "conf" / "recipe").glob(
                f"{task}_*.yaml"))
            raise SweepError(f"{task} has no recipe at scale {scale} (no conf/recipe/"
                             f"{task}_{scale}.yaml); use --scale {' or '.join(have)}, or leave "
                             f"{task} out with --task")


def compose_cells(overrides: list[list[str]], sweep_file: str = "") -> list[tuple[Path, Path]]:
    """(run_dir, record_path) that run.py would use, for each list of overrides."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig
    from hydra.errors import HydraException
    from omegaconf import OmegaConf, open_dict
    from omegaconf.errors import OmegaConfBaseException

    from experiments import register_configs
    from experiments.records import record_path
    from experiments.validate import check_config

    register_configs()
    out = []
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        for ov in overrides:
            try:
                cfg = compose("config", overrides=ov, return_hydra_config=True)
                HydraConfig.instance().set_config(cfg)
                run_dir = Path(OmegaConf.select(cfg, "hydra.run.dir"))
                with open_dict(cfg):
                    cfg.optim_name = OmegaConf.select(cfg, "hydra.runtime.choices.optim")
                    cfg.variant = str(cfg.variant)  # resolved while the hydra node is here
                    del cfg.hydra
                record = record_path(cfg)
                check_config(cfg, here=False)  # a bad value fails here, not in the queue
            except (HydraException, OmegaConfBaseException, ValueError) as e:
                raise SweepError(f"sweep {sweep_file}: the cell `{' '.join(ov)}` does not "
                                 f"compose: {_one_line(e)}; fix its overrides") from None
            except ConfigError as e:
                raise SweepError(f"sweep {sweep_file}: the cell `{' '.join(ov)}` is refused: "
                                 f"{e}; fix its overrides") from None
            out.append((run_dir if run_dir.is_absolute() else ROOT / run_dir, ROOT / record))
    return out


def cells(sweep: dict, scale: str) -> list[dict]:
    """Every (task, optim, seed, overrides) of the sweep, with its command and paths."""
    grid = list(itertools.product(sweep["tasks"], sweep["optims"], sweep["seeds"],
                                  sweep.get("overrides") or [[]]))
    per_task = sweep.get("fixed_per_task") or {}
    overrides = [[f"task={task}", f"optim={optim}", f"scale={scale}", f"seed={seed}", *extra,
                  *(sweep.get("fixed") or []), *per_task.get(task, [])]
                 for task, optim, seed, extra in grid]
    out, seen, src = [], {}, sweep.get("file", sweep["name"])
    for (task, optim, seed, extra), ov, (run_dir, record) in zip(grid, overrides,
                                                                  compose_cells(overrides, src)):
        cell = " ".join(ov)
        if run_dir in seen:
            raise SweepError(f"sweep {src}: the cells `{seen[run_dir]}` and `{cell}` share the "
                             f"run folder {run_dir}; make their overrides differ in something "
                             "that names the folder")
        seen[run_dir] = cell
        gpus = int(resources(sweep, scale, task).get("gpus", 0))
        launch = ([str(ROOT / ".venv/bin/torchrun"), "--standalone", f"--nproc_per_node={gpus}"]
                  if gpus > 1 else [sys.executable])
        cmd = shlex.join([*launch, str(ROOT / "run.py"), *ov, "resume=auto"])
        out.append({"task": task, "optim": optim, "seed": seed, "overrides": list(extra),
                    "run_dir": run_dir, "record": record, "cmd": cmd})
    return out
