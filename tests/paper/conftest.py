"""Synthetic format fixtures for the `paper` tests: miniature data in the paper runs' real
formats (tests/paper/formats.py), built once per session in a temporary folder."""

import formats
import pytest


@pytest.fixture(scope="session")
def synthetic_imagenet(tmp_path_factory):
    return formats.imagenet_folder(tmp_path_factory.mktemp("imagenet"))


@pytest.fixture(scope="session")
def synthetic_wmt(tmp_path_factory):
    return formats.wmt_folder(tmp_path_factory.mktemp("wmt"))


@pytest.fixture
def synthetic_criteo(tmp_path):
    """Per test: the runner caches its preprocessing next to the TSV."""
    return formats.criteo_tsv(tmp_path / "criteo" / "train.txt")


@pytest.fixture(scope="session")
def synthetic_llama(tmp_path_factory):
    """(checkpoint folder, Alpaca JSON)."""
    root = tmp_path_factory.mktemp("llama")
    return formats.llama_folder(root / "model"), formats.alpaca_json(root / "alpaca.json")


@pytest.fixture(scope="session")
def synthetic_lm_eval_sources(tmp_path_factory):
    """CLI arguments of scripts/prepare_lm_eval.py for tiny local benchmark files."""
    return formats.lm_eval_sources(tmp_path_factory.mktemp("lm_eval_sources"))


@pytest.fixture(scope="session")
def synthetic_lm_eval(tmp_path_factory, synthetic_lm_eval_sources):
    """The five benchmarks prepared by scripts/prepare_lm_eval.py from the tiny files."""
    out = tmp_path_factory.mktemp("lm_eval")
    res = formats.prepare(out, synthetic_lm_eval_sources)
    assert res.returncode == 0, res.stderr[-3000:]
    return out
