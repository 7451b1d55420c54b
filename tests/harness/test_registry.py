"""The optimizer registry: each name defined once (solo.presets or experiments.optimizers), and
Hydra, the paper tables and the beta1 defaults all read that one definition."""

import csv
import importlib

import pytest
import torch
from harness_utils import ROOT

import solo
from experiments import optimizers
from experiments.config import compose
from experiments.optimizers import OPTIMIZERS, PEERS


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_a_name_is_its_definitions_attribute(name):
    # `optim=<name>`, the record path and `grep -n "^<name> = " solo/presets.py` all agree.
    module, _, attr = optimizers.target(name).rpartition(".")
    entry = getattr(importlib.import_module(module), attr)
    assert entry is OPTIMIZERS[name] and entry.name == attr == name
    assert entry.label and isinstance(entry.knobs, dict)


def test_presets_and_peers_do_not_share_a_name_or_a_label():
    assert not set(solo.PRESETS) & set(PEERS)
    labels = [p.label for p in OPTIMIZERS.values()]
    assert len(labels) == len(set(labels))


@pytest.mark.parametrize("name, beta1", [("solo_4_2bit", 0.818), ("solo_3bit", 0.692),
                                         ("solo_2bit", 0.525), ("adabelief_solo_4_2bit", 0.818),
                                         ("adamw4bit", 0.9), ("torch_adamw", 0.9)])
def test_a_null_beta1_is_the_registry_default(name, beta1):
    assert OPTIMIZERS[name].default_beta1() == beta1
    cfg = compose([f"optim={name}"])
    opt = optimizers.build_optimizer(cfg, [torch.nn.Parameter(torch.zeros(4))], lr=1e-3,
                                     beta2=0.999, eps=1e-8, weight_decay=0.0)
    assert opt.param_groups[0]["betas"][0] == pytest.approx(beta1)


def test_a_missing_peer_library_names_the_optimizer_and_the_fix():
    peer = solo.presets.Preset("nope", "not installed", "no_such_library.AdamW")
    with pytest.raises(ImportError, match=r"optimizer 'nope' needs no_such_library.AdamW.*install"):
        peer([torch.nn.Parameter(torch.zeros(4))])


def test_knob_overrides_reach_the_optimizer_and_leave_the_preset_alone():
    p = [torch.nn.Parameter(torch.zeros(4))]
    opt = solo.presets.solo_4_2bit(p, quantile=0.3, block_size=(128, 2048))
    assert opt.param_groups[0]["quantile"] == 0.3
    assert opt.param_groups[0]["block_size"] == (128, 2048)
    assert "quantile" not in solo.presets.solo_4_2bit.knobs


@pytest.mark.parametrize("table", ["solo_table1", "solo_table2a", "solo_adabelief"])
def test_paper_rows_are_found_by_the_registry_label(table):
    # The tables look the paper's numbers up by label; the CSVs' optim column says the same.
    with open(ROOT / "results" / "paper" / f"{table}.csv", newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["optim"]]
    assert rows
    for row in rows:
        assert OPTIMIZERS[row["optim"]].label == row["optimizer"], row
