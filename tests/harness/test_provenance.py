"""Provenance: the code a record names, the dirty-tree refusal, staleness, kernels, and the
optimizer values a record keeps."""

import subprocess

import pytest
import torch
from omegaconf import OmegaConf

import solo
from experiments import provenance, validate
from experiments.errors import DirtyTree


def test_blob_hash_is_gits_object_name(tmp_path):
    f = tmp_path / "x.py"
    f.write_bytes(b"print('hi')\n\x00binary too")
    out = subprocess.run(["git", "hash-object", str(f)], capture_output=True, text=True)
    assert provenance.blob_hash(f.read_bytes()) == out.stdout.strip()


@pytest.fixture
def repo(tmp_path):
    def git(*args):
        subprocess.run(["git", "-C", str(tmp_path), *args], check=True, capture_output=True)
    git("init", "-q")
    git("config", "user.email", "t@t")
    git("config", "user.name", "t")
    for path in ("solo/optim.py", "experiments/dcn/run.py", "experiments/swin/run.py",
                 "conf/task/dcn.yaml", "conf/recipe/swin_small.yaml", "run.py", "README.md"):
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_text(f"# {path}\n")
    git("add", "-A")
    git("commit", "-qm", "init")
    return tmp_path, git


def test_code_files_match_head_on_a_clean_tree_and_name_every_edit(repo):
    root, git = repo
    files = provenance.code_files(root)
    listed = provenance.git("ls-tree", "-r", "HEAD", root=root).splitlines()
    tracked = {line.split("\t")[1]: line.split()[2] for line in listed}
    assert files == {p: b for p, b in tracked.items() if p != "README.md"}  # git's own hashes
    assert "README.md" not in files and provenance.dirty_files(root) == []
    (root / "experiments/dcn/run.py").write_text("# changed\n")
    (root / "experiments/new.py").write_text("x = 1\n")  # untracked code counts too
    assert provenance.dirty_files(root) == ["experiments/dcn/run.py", "experiments/new.py"]
    changed = provenance.code_files(root)
    assert provenance.code_hash(changed) != provenance.code_hash(files)
    assert changed["experiments/new.py"] == provenance.blob_hash(b"x = 1\n")


def test_a_record_is_stale_only_for_changes_that_affect_its_task(repo):
    root, git = repo
    ran = provenance.code_files(root)
    record = {"task": "swin", "provenance": {"code_files": ran}}
    assert provenance.stale_files(record, provenance.code_files(root)) == []
    (root / "experiments/dcn/run.py").write_text("# dcn only\n")
    (root / "conf/task/dcn.yaml").write_text("# dcn only\n")
    git("commit", "-qam", "dcn")
    assert provenance.stale_files(record, provenance.code_files(root)) == []
    (root / "solo/optim.py").write_text("# shared\n")
    git("commit", "-qam", "solo")
    assert provenance.stale_files(record, provenance.code_files(root)) == ["solo/optim.py"]
    assert provenance.stale_files({"task": "swin", "provenance": {}}, {}) is None


def test_a_recipe_edit_that_changes_only_comments_leaves_its_records_current(repo):
    root, git = repo
    recipe = root / "conf/recipe/swin_small.yaml"
    recipe.write_text("lr: 0.002\nepochs: 40\n")
    git("commit", "-qam", "recipe")
    record = {"task": "swin", "provenance": {"code_files": provenance.code_files(root)}}
    recipe.write_text("# measured: top-1 61.2 +- 0.4 over 5 seeds\nlr: 2.0e-3  # tuned\n"
                      "epochs: 40\n")
    assert provenance.stale_files(record, provenance.code_files(root), root) == []  # unstaged
    git("commit", "-qam", "comments")
    assert provenance.stale_files(record, provenance.code_files(root), root) == []
    recipe.write_text("lr: 0.002\nepochs: 41\n")
    assert provenance.stale_files(record, provenance.code_files(root), root) == [
        "conf/recipe/swin_small.yaml"]
    recipe.write_text("lr: [unclosed\n")  # unreadable counts as a change
    assert provenance.stale_files(record, provenance.code_files(root), root) == [
        "conf/recipe/swin_small.yaml"]
    (root / "run.py").write_text("# same comment style, but Python: a change\n")
    assert "run.py" in provenance.stale_files(record, provenance.code_files(root), root)


@pytest.mark.parametrize("path,task,expected", [
    ("solo/codecs.py", "dcn", True), ("experiments/scaffold.py", "dcn", True),
    ("experiments/swin/run.py", "dcn", False), ("experiments/dcn/data.py", "dcn", True),
    ("conf/recipe/dcn_small.yaml", "dcn", True), ("conf/recipe/swin_small.yaml", "dcn", False),
    ("conf/task/swin.yaml", "dcn", False), ("conf/config.yaml", "dcn", True),
    ("conf/logger/wandb.yaml", "dcn", False), ("run.py", "swin", True),
    ("conf/claims.yaml", "swin", False),
])
def test_affects(path, task, expected):
    assert provenance.affects(task, path) is expected


def cfg(records_dir, scale="small", **extra):
    return OmegaConf.create({"scale": {"name": scale}, "task": {"name": "dcn"},
                             "records_dir": str(records_dir), **extra})


def test_a_record_for_the_committed_folder_needs_a_clean_tree(monkeypatch, tmp_path):
    monkeypatch.setattr(provenance, "_SNAPSHOT", {"dirty_files": ["solo/optim.py"]})
    committed = provenance.COMMITTED_RECORDS
    with pytest.raises(DirtyTree, match=r"solo/optim\.py.*allow_dirty=true"):
        validate.check_clean(cfg(committed))
    validate.check_clean(cfg(committed, allow_dirty=True))
    validate.check_clean(cfg(committed, scale="smoke"))
    validate.check_clean(cfg(tmp_path))  # not the committed records
    monkeypatch.setattr(provenance, "_SNAPSHOT", {"dirty_files": ["experiments/swin/run.py"]})
    validate.check_clean(cfg(committed))  # another task's code
    monkeypatch.setattr(provenance, "_SNAPSHOT", {"dirty_files": []})
    validate.check_clean(cfg(committed))


def test_kernels_and_optimizer_values_are_what_ran():
    big, small = torch.nn.Parameter(torch.randn(64, 64)), torch.nn.Parameter(torch.randn(3))
    opt = solo.presets.solo_2bit([{"params": [big]}, {"params": [small], "lr": 0.5}],
                                 lr=0.1, fused=False)
    assert provenance.kernel(opt) == "none"
    big.grad, small.grad = torch.randn_like(big), torch.randn_like(small)
    opt.step()
    assert provenance.kernel(opt) == "reference"
    section = provenance.optimizer_section(opt)
    assert section["class"] == "solo.optim.AdamW"
    assert section["betas"] == [solo.presets.default_beta1("solo_2bit"), 0.999]
    assert section["bits"] == [2, 2] and section["quantizers"] == ["de", "log"]
    assert section["groups"] == [{"lr": 0.1, "numel": 4096}, {"lr": 0.5, "numel": 3}]
    mixed = solo.presets.adamw32([big], lr=0.1)
    mixed.add_param_group({"params": [small], "fused": False})
    mixed.step()
    assert provenance.kernel(mixed) == {"param_groups[0]": "torch",
                                        "param_groups[1]": "reference"}
    peer = torch.optim.SGD([big], lr=0.1)
    assert provenance.kernel(peer) == "torch"
    assert "betas" not in provenance.optimizer_section(peer)
