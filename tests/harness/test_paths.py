"""Where runs and records lie: one layout for both (experiments.folders.cell_path), one rule that
names a variant (experiments.folders.variant_name), and every committed record where they put it."""

import json
import re
import shutil
from pathlib import Path

import pytest
import yaml
from harness_utils import ROOT

from experiments import records
from experiments.folders import cell_path, variant_name
from scripts import submit

RUNS = ROOT / "results" / "runs"
TASKS = sorted(p.stem for p in (ROOT / "conf" / "task").glob("*.yaml"))
# Before conf/recipe/ held the recipes, a run set one as task.scales.<scale>.<key>: the knob that
# is scale.<key> now. Records of those runs name it so in their command.
LEGACY_RECIPE_KEY = re.compile(r"^task\.scales\.[^.=]+\.")


def exclude_keys() -> list:
    conf = yaml.safe_load((ROOT / "conf" / "config.yaml").read_text())
    return conf["hydra"]["job"]["config"]["override_dirname"]["exclude_keys"]


def infra_keys(task: str) -> list:
    return yaml.safe_load((ROOT / "conf" / "task" / f"{task}.yaml").read_text())["infra_keys"]


def command_overrides(record: dict) -> list[str]:
    """The overrides the run was started with: the words after run.py in its command."""
    words = record["provenance"]["command"].split()
    start = next(i for i, w in enumerate(words) if w.endswith("run.py")) + 1
    return [LEGACY_RECIPE_KEY.sub("scale.", w) for w in words[start:]]


def compose_paths(conf: Path, overrides, outputs: Path, recs: Path):
    """(variant, run folder, sweep subfolder, record path) that run.py would use."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import OmegaConf, open_dict

    from experiments import register_configs

    register_configs()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(conf), version_base="1.3"):
        cfg = compose("config", overrides=[*overrides, f"records_dir={recs}"],
                      return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)
    run_dir, subdir = Path(cfg.hydra.run.dir), Path(cfg.hydra.sweep.subdir)
    with open_dict(cfg):
        cfg.optim_name = OmegaConf.select(cfg, "hydra.runtime.choices.optim")
        cfg.variant = str(cfg.variant)
        del cfg.hydra
    return cfg.variant, run_dir, subdir, records.record_path(cfg)


# ----------------------------------------------------------------------------- the layout


def test_a_cell_is_scale_task_optim_variant_seed():
    assert cell_path("small", "swin", "adamw32", "beta1=0.8", 2) == Path(
        "small/swin/adamw32/beta1=0.8/seed2")
    for none in ("", None):
        assert cell_path("small", "swin", "adamw32", none, 0) == Path("small/swin/adamw32/seed0")


@pytest.mark.parametrize("bad", ["a/b", "..", "."])
def test_a_part_that_is_not_one_folder_name_is_refused(bad):
    with pytest.raises(ValueError, match="one folder name"):
        cell_path("small", "swin", "adamw32", bad, 0)
    with pytest.raises(ValueError, match="one folder name"):
        cell_path("small", bad, "adamw32", None, 0)


@pytest.mark.parametrize("extra, variant", [([], ""),
                                            (["beta1=0.8", "scale.epochs=3"], "beta1=0.8,epochs=3")])
def test_run_folder_and_record_have_the_same_path(tmp_path, monkeypatch, extra, variant):
    monkeypatch.setenv("SOLO_OUTPUTS_DIR", str(tmp_path / "outputs"))
    got, run_dir, subdir, record = compose_paths(
        ROOT / "conf", ["task=dcn", "optim=adamw32", "scale=smoke", "seed=4", *extra],
        tmp_path / "outputs", tmp_path / "records")
    cell = cell_path("smoke", "dcn", "adamw32", variant, 4)
    assert got == variant
    assert run_dir == tmp_path / "outputs" / cell and subdir == cell
    assert record == tmp_path / "records" / cell.with_suffix(".json")
    assert records.relative_path({"scale": "smoke", "task": "dcn", "optim": "adamw32",
                                  "variant": variant or None, "seed": 4}) == Path(f"{cell}.json")


# ----------------------------------------------------------------------------- the variant rule


@pytest.mark.parametrize("overrides, infra, name", [
    (["+optim.quantile=0.5", "scale.epochs=10"], [], "epochs=10,quantile=0.5"),
    (["scale.lr=1", "+optim.lr=2"], [], "optim.lr=2,scale.lr=1"),  # ambiguous: prefixes kept
    (["beta1=0.5", "+optim.beta1=0.6"], [], "beta1=0.5,optim.beta1=0.6"),  # a top-level key
    (["task.data_dir=/d", "task.workers=2"], ["data_dir"], "task.workers=2"),
    (["task.cache.dir=/c", "task.cache_size=3"], ["cache"], "task.cache_size=3"),
    (["logger=none", "logger.tags=[a]", "seed=3", "hydra.job.chdir=true"], [], ""),
    (["+task.tokenizer=a/b"], [], "task.tokenizer=a_b"),
    (["~optim.quantile", "beta1=0.9"], [], "beta1=0.9,quantile="),
])
def test_the_variant_rule(overrides, infra, name):
    assert variant_name(overrides, exclude_keys(), infra) == name


@pytest.mark.parametrize("task", TASKS)
def test_every_task_declares_its_infra_keys_and_they_never_name_a_variant(task, tmp_path):
    conf = yaml.safe_load((ROOT / "conf" / "task" / f"{task}.yaml").read_text())
    keys = conf["infra_keys"]
    assert keys and set(keys) <= set(conf) - {"name", "runner", "infra_keys"}, keys
    overrides = [f"task={task}", "optim=adamw32", *(f"task.{k}=1" for k in keys)]
    variant, *_ = compose_paths(ROOT / "conf", overrides, tmp_path, tmp_path / "records")
    assert variant == ""


def test_a_new_task_key_names_the_variant_unless_declared_infra(tmp_path, monkeypatch):
    # A copy of conf/ whose swin task has a key no rule has heard of: overriding it moves the run
    # to a variant that names it (never into the table cell, never silently); declared in
    # infra_keys, it leaves the run in its cell.
    conf = tmp_path / "conf"
    shutil.copytree(ROOT / "conf", conf)
    task_file = conf / "task" / "swin.yaml"
    task_file.write_text(task_file.read_text() + "\nprefetch: 2\n")
    monkeypatch.setenv("SOLO_OUTPUTS_DIR", str(tmp_path / "outputs"))
    overrides = ["task=swin", "optim=adamw32", "seed=1", "task.prefetch=4"]
    variant, run_dir, _, record = compose_paths(conf, overrides, tmp_path, tmp_path / "records")
    assert variant == "task.prefetch=4"
    assert record == tmp_path / "records/small/swin/adamw32/task.prefetch=4/seed1.json"
    assert run_dir == tmp_path / "outputs/small/swin/adamw32/task.prefetch=4/seed1"

    conf_text = task_file.read_text().replace("infra_keys: [", "infra_keys: [prefetch, ")
    task_file.write_text(conf_text)
    variant, run_dir, _, record = compose_paths(conf, overrides, tmp_path, tmp_path / "records")
    assert variant == "" and record == tmp_path / "records/small/swin/adamw32/seed1.json"


# ----------------------------------------------------------------------------- committed records


def test_every_committed_record_and_crash_note_sits_where_the_rule_puts_it():
    # results/superseded keeps replaced records in the same layout
    files = sorted((root, p) for root in (RUNS, RUNS.parent / "superseded")
                   for p in root.rglob("*") if p.is_file() and p.name != "README.md")
    assert len(files) >= 150
    wrong = []
    for root, path in files:
        assert re.fullmatch(r"(crash-)?seed\d+\.json", path.name), path
        rec = json.loads(path.read_text())
        variant = variant_name(command_overrides(rec), exclude_keys(),
                               infra_keys(rec["task"])) or None
        where = records.relative_path({**rec, "variant": variant},
                                      crash_note=path.name.startswith("crash-"))
        if path.relative_to(root) != where or rec["variant"] != variant:
            wrong.append(f"{path.relative_to(root)}: variant {rec['variant']!r}, the rule "
                         f"puts it at {where}")
    assert not wrong, "\n".join(wrong)


# DCN's ablation records are committed; Swin's were made on MNIST and are superseded, so its
# cells are to run again.
@pytest.mark.parametrize("sweep, crashed", [("ablation_quantile", 0), ("ablation_beta1", 0),
                                            ("ablation_block", 2)])
def test_the_ablation_sweeps_find_their_committed_cells(sweep, crashed, tmp_path, monkeypatch):
    monkeypatch.delenv("SOLO_RECORDS_DIR", raising=False)
    monkeypatch.setenv("SOLO_OUTPUTS_DIR", str(tmp_path / "outputs"))
    rows = [r for r in submit.status(submit.load_sweep(sweep), "small")
            if "/small/dcn/" in str(r["record"])]
    assert len(rows) in (10, 6)
    states = [r["state"] for r in rows]
    assert states.count("crashed") == crashed
    assert states.count("done") == len(rows) - crashed, [
        (r["record"], r["state"]) for r in rows if r["state"] not in ("done", "crashed")]


def test_the_beta1_controls_land_where_claim_f_reads_them(tmp_path, monkeypatch):
    """The control sweep makes exactly the baseline records of claim (f)'s small-scale cells."""
    monkeypatch.delenv("SOLO_RECORDS_DIR", raising=False)
    monkeypatch.setenv("SOLO_OUTPUTS_DIR", str(tmp_path / "outputs"))
    claim = next(c for c in yaml.safe_load((ROOT / "conf/claims.yaml").read_text())["claims"]
                 if c["id"] == "f")
    tasks = [c["task"] for c in claim["cells"] if c["scale"] == "small"]
    variants = [c["baseline_variant"] for c in claim["comparisons"]]
    sweep = {**submit.load_sweep("beta1_controls"), "seeds": [2]}
    got = {str(Path(c["record"]).relative_to(RUNS)) for c in submit.cells(sweep, "small")}
    assert got == {f"small/{t}/adamw32/{v}/seed2.json" for t in tasks for v in variants}
    assert {"swin", "transformer", "dcn", "glue", "hstu"} <= set(tasks)


def test_the_ablation_figure_reads_every_cell_of_the_sweeps():
    from scripts import figures_runs

    rows = figures_runs._ablation_rows()
    per = {name: [r for r in rows if r[0] == name] for name in figures_runs.ABLATIONS}
    assert [len(per[n]) for n in ("quantile", "beta1", "block")] == [10, 10, 6]  # DCN's
    assert sorted({r[3] for r in per["block"]}) == ["128/de", "128/linear", "128/log",
                                                    "2048/de", "2048/linear", "2048/log"]
    assert sorted({r[3] for r in per["quantile"]}) == ["0.01", "0.05", "0.1", "0.3", "0.5"]
    assert [r[3] for r in rows if r[5] == "crash"] == ["128/de", "2048/de"]
