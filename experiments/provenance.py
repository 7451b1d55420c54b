"""Where, with what code and with which step a run ran: the ``provenance`` and ``optimizer``
sections of its record, and the checks that use them (dirty trees, stale records).

The code a run ran is named file by file: ``provenance.code_files`` maps every tracked file of
:data:`CODE_PATHS` to the git blob hash of its content at the start of the run (uncommitted edits
included), and ``provenance.code_hash`` is one hash of that map. A record is *stale* when a file
that affects its task (:func:`affects`) has another content at HEAD; *dirty* when the tree had
uncommitted changes to those folders.

Standard library at import time, so that readers of records need neither torch nor omegaconf.
"""

import hashlib
import os
import platform
import socket
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
#: What a run's results depend on: the library, the harness, the configs, the entry point.
CODE_PATHS = ("solo", "experiments", "conf", "run.py")
#: Folders of the committed records: writing there needs a clean tree (or allow_dirty=true).
COMMITTED_RECORDS = ROOT / "results" / "runs"
LIBRARIES = ("solo-lowbit", "torch", "numpy", "timm", "hydra-core", "omegaconf", "wandb",
             "torchao", "bitsandbytes", "sacrebleu", "transformers", "torchrec", "lm_eval")


def git(*args: str, root: Path = ROOT) -> str | None:
    """``git -C root args`` stdout, trailing white space dropped; None when git or the
    repository is missing."""
    try:
        out = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True,
                             timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.rstrip() if out.returncode == 0 else None


def cpu_name() -> str:
    """The CPU's model name (``/proc/cpuinfo``), else what platform knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def blob_hash(data: bytes) -> str:
    """git's object name of a file with this content (``git hash-object``)."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def code_files(root: Path = ROOT) -> dict[str, str]:
    """{path: blob hash of its content now} for every file of :data:`CODE_PATHS` that git
    tracks or would track (untracked, not ignored); without git, every file found there."""
    listed = git("ls-files", "-z", "--cached", "--others", "--exclude-standard", "--",
                 *CODE_PATHS, root=root)
    if listed is None:
        paths = [str(p.relative_to(root)) for c in CODE_PATHS for p in
                 sorted((root / c).rglob("*") if (root / c).is_dir() else [root / c])
                 if p.is_file() and "__pycache__" not in p.parts]
    else:
        paths = sorted(set(filter(None, listed.split("\0"))))
    files = {}
    for path in paths:
        try:
            files[path] = blob_hash((root / path).read_bytes())
        except OSError:  # deleted, not yet committed: it did not run
            pass
    return files


def code_hash(files: dict[str, str]) -> str:
    """One hash (16 hex digits) of a :func:`code_files` map."""
    text = "".join(f"{path} {blob}\n" for path, blob in sorted(files.items()))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def dirty_files(root: Path = ROOT) -> list[str] | None:
    """Files of :data:`CODE_PATHS` with uncommitted changes (untracked ones included);
    None without git."""
    status = git("status", "--porcelain", "--untracked-files=all", "--", *CODE_PATHS, root=root)
    if status is None:
        return None
    return sorted(line[3:].split(" -> ")[-1] for line in status.splitlines() if line)


def affects(task: str, path: str) -> bool:
    """Whether the file ``path`` (repository-relative) can change the results of ``task``:
    the library, the shared harness, the entry point and configs, the task's own package,
    config and recipes; not another task's."""
    parts = path.split("/")
    if parts[0] == "experiments" and len(parts) > 2:
        return parts[1] == task
    if parts[0] == "conf" and len(parts) > 2 and parts[1] == "task":
        return parts[2].split(".")[0] == task
    if parts[0] == "conf" and len(parts) > 2 and parts[1] == "recipe":
        return parts[2].startswith(f"{task}_")
    if parts[:2] == ["conf", "logger"] or path == "conf/claims.yaml":  # logging; the tables'
        return False
    return True


def stale_files(record: dict, head: dict[str, str], root: Path = ROOT) -> list[str] | None:
    """Files that affect the record's task and differ between the code it ran and ``head``
    (a :func:`code_files` map, e.g. of the current tree); None when the record does not name
    its code (older records). A YAML file whose edit changed only comments or layout is not
    counted (:func:`same_settings`): a recipe may say what its runs measured."""
    ran = record.get("provenance", {}).get("code_files")
    if not isinstance(ran, dict):
        return None
    task = record["task"]
    return sorted(p for p in set(ran) | set(head)
                  if affects(task, p) and ran.get(p) != head.get(p)
                  and not same_settings(p, ran.get(p), head.get(p), root))


_SETTINGS: dict = {}


def same_settings(path: str, old: str | None, new: str | None, root: Path = ROOT) -> bool:
    """Whether two versions (blob hashes) of the YAML file ``path`` hold the same data: both
    readable (git's object store, or the file itself for uncommitted content) and equal once
    parsed. False for anything else: a change that cannot be read counts as a change."""
    if not path.endswith(".yaml") or old is None or new is None:
        return False
    if (old, new) not in _SETTINGS:
        import yaml  # only here: readers of records that never compare need no PyYAML

        texts = [_blob_text(path, blob, root) for blob in (old, new)]
        try:
            same = None not in texts and yaml.safe_load(texts[0]) == yaml.safe_load(texts[1])
        except yaml.YAMLError:
            same = False
        _SETTINGS[(old, new)] = same
    return _SETTINGS[(old, new)]


def _blob_text(path: str, blob: str, root: Path) -> str | None:
    text = git("cat-file", "blob", blob, root=root)
    if text is not None:
        return text
    try:
        data = (root / path).read_bytes()
    except OSError:
        return None
    return data.decode() if blob_hash(data) == blob else None


_SNAPSHOT: dict = {}


def snapshot() -> dict:
    """The code and start time of this process's run, taken once (the first call: the
    preflight, before the task's modules are imported) and reused by every record and note."""
    if not _SNAPSHOT:
        files = code_files()
        _SNAPSHOT.update(
            started_utc=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            code_hash=code_hash(files), code_files=files, dirty_files=dirty_files())
    return _SNAPSHOT


def versions() -> dict:
    found = {"python": platform.python_version()}
    for name in LIBRARIES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return found


def provenance(wandb_path: str | None = None) -> dict:
    """Where and with what a run ran: git state, the code (:func:`snapshot`), host, hardware,
    library versions, Slurm ids, the command."""
    import torch

    snap = snapshot()
    dirty = snap["dirty_files"]
    return {
        "git_sha": git("rev-parse", "HEAD"),
        "git_dirty": None if dirty is None else bool(dirty),
        "dirty_files": dirty,
        "code_hash": snap["code_hash"],
        "code_files": snap["code_files"],
        "started_utc": snap["started_utc"],
        "host": socket.gethostname(),
        "cpu": cpu_name(),
        "cpu_threads": torch.get_num_threads(),
        "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
        "versions": versions(),
        "slurm_job_id": os.environ.get("SLURM_JOB_ID"),
        "slurm_array_task_id": os.environ.get("SLURM_ARRAY_TASK_ID"),
        "wandb_run_path": wandb_path,
        "command": " ".join(sys.argv),
    }


def kernel(optimizer) -> str | dict:
    """Which step ran (the last one): ``reference``, ``cpu_fused``, ``triton`` or ``torch`` for
    solo's optimizers (:meth:`solo.AdamW.kernels`), the library's name for a peer's; a dict
    ``{"param_groups[i]": "a+b"}`` when the groups did not all take the same one."""
    if not hasattr(optimizer, "kernels"):
        module = type(optimizer).__module__.split(".")[0]
        return "torch" if module == "torch" else module
    per_group = {f"param_groups[{gi}]": "+".join(names)
                 for gi, names in sorted(optimizer.kernels().items())}
    kinds = set(per_group.values())
    if len(kinds) == 1:
        return kinds.pop()
    return per_group or "none"


#: The group values a record keeps (those an optimizer has), lr as set before any schedule.
OPTIMIZER_KEYS = ("lr", "betas", "eps", "weight_decay", "bits", "quantizers", "block_size",
                  "quantile", "min_quantizable_size", "seed")


def _value(v):
    if hasattr(v, "item") and getattr(v, "numel", lambda: 2)() == 1:
        return v.item()
    if isinstance(v, (tuple, list)):
        return [_value(x) for x in v]
    return v


def optimizer_section(optimizer) -> dict:
    """The values the optimizer ran with: ``class``; every :data:`OPTIMIZER_KEYS` value that
    all param groups share; ``groups``: per group, its element count and the values in which
    it differs from the others."""
    groups = []
    for group in optimizer.param_groups:
        values = {k: _value(group.get("initial_lr", group["lr"]) if k == "lr" else group[k])
                  for k in OPTIMIZER_KEYS if k in group}
        values["numel"] = sum(p.numel() for p in group["params"])
        groups.append(values)
    keys = [k for k in OPTIMIZER_KEYS if all(k in g for g in groups)]
    shared = {k: groups[0][k] for k in keys if all(g[k] == groups[0][k] for g in groups)}
    cls = type(optimizer)
    return {"class": f"{cls.__module__}.{cls.__qualname__}", **shared,
            "groups": [{k: v for k, v in g.items() if k not in shared} for g in groups]}


def committed(records_dir) -> bool:
    """Whether ``records_dir`` is the repository's committed records folder."""
    try:
        return Path(os.path.abspath(records_dir)).resolve() == COMMITTED_RECORDS.resolve()
    except OSError:
        return False
