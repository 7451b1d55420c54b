"""Run folders and records: where each lies, the variant name of a run's extra overrides,
one writer per run folder (a lock), its metrics history.

One layout names both (:func:`cell_path`), in the same order: a run's folder is
``<outputs>/<scale>/<task>/<optim>[/<variant>]/seed<k>/`` (conf/config.yaml's ``hydra.run.dir``
and ``hydra.sweep.subdir``, through the ``${run_cell:}`` resolver) and its record is
``<records_dir>/<scale>/<task>/<optim>[/<variant>]/seed<k>.json``
(:func:`experiments.records.record_path`).

Standard library at import time: the readers of records import this module.
"""

import fcntl
import json
import os
import socket
import sys
import time
from fnmatch import fnmatchcase
from pathlib import Path

from experiments.errors import RunFolderBusy

#: Groups whose prefix a variant name drops where the rest of the key is unambiguous.
GROUP_PREFIXES = ("optim.", "scale.")


def cell_path(scale: str, task: str, optim: str, variant: str | None, seed: int) -> Path:
    """``<scale>/<task>/<optim>[/<variant>]/seed<k>``: a run's folder below the outputs folder,
    and its record (``.json`` added) below the records folder. No variant, no folder level."""
    parts = [str(scale), str(task), str(optim), *([str(variant)] if variant else [])]
    for part in parts:
        if not part or "/" in part or part in (".", ".."):
            raise ValueError(f"cannot name a folder {part!r} (in {'/'.join(parts)}): each of "
                             "scale, task, optim and variant must be one folder name")
    return Path(*parts, f"seed{int(seed)}")


def variant_name(overrides, exclude, infra=()) -> str:
    """The variant of a run: the folder that holds its run folder and record apart from its
    cell's (:func:`cell_path`), named by the overrides that make it differ; "" when none do.

    ``overrides``: the run's overrides as typed (Hydra's ``overrides.task``). An override
    names the variant unless its key (``+``/``~`` dropped) matches a pattern of ``exclude``
    (conf/config.yaml: the keys that already name the path, or change no result) or is
    ``task.<k>`` (or below it) with ``k`` in ``infra``, the task's own ``infra_keys`` (paths to
    data, workers, cache folders: conf/task/<task>.yaml). Any other task key, a new one
    included, names the variant.

    The name is ``key=value`` items, values as typed with ``/`` made ``_``, sorted and joined
    by ``,``; the ``optim.`` or ``scale.`` prefix is dropped where the rest of the key is no
    other item's key or short key, e.g. ``epochs=10,quantile=0.5`` for
    ``+optim.quantile=0.5 scale.epochs=10``, but ``optim.lr=2,scale.lr=1``."""
    patterns = [str(e) for e in exclude]
    infra = [f"task.{k}" for k in infra]
    items = {}
    for o in overrides:
        key, _, value = str(o).partition("=")
        key = key.lstrip("+~")
        if any(fnmatchcase(key, p) for p in patterns):
            continue
        if any(key == k or key.startswith(k + ".") for k in infra):
            continue
        items[key] = value.replace("/", "_")
    rest = [k.split(".", 1)[1] for k in items if k.startswith(GROUP_PREFIXES)]

    def short(key):
        tail = key.split(".", 1)[1] if key.startswith(GROUP_PREFIXES) else None
        return tail if tail and rest.count(tail) == 1 and tail not in items else key

    return ",".join(sorted(f"{short(k)}={v}" for k, v in items.items()))


def register_resolvers() -> None:
    """``${run_variant:...}`` and ``${run_cell:...}`` for conf/config.yaml (see
    :func:`experiments.register_configs`)."""
    from omegaconf import OmegaConf

    if not OmegaConf.has_resolver("run_variant"):
        OmegaConf.register_new_resolver("run_variant", variant_name)
    if not OmegaConf.has_resolver("run_cell"):
        OmegaConf.register_new_resolver(
            "run_cell", lambda *cell: cell_path(*cell).as_posix())


class Lock:
    """An exclusive lock on ``<run_dir>/.lock``, held until :meth:`release` (or the process
    ends: the kernel drops flock locks of dead processes, so a SIGKILL leaves none behind).
    The holder writes who it is into the file; a second run exits naming it."""

    def __init__(self, run_dir: Path):
        run_dir.mkdir(parents=True, exist_ok=True)
        self.path = run_dir / ".lock"
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(self.fd, 4096).decode(errors="replace").strip() or "unknown"
            os.close(self.fd)
            raise RunFolderBusy(
                f"run folder {run_dir} is in use by another run ({holder}); wait for it to "
                "finish, or give this run its own folder (hydra.run.dir=...)") from None
        os.ftruncate(self.fd, 0)
        os.write(self.fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                                      "since": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                                      "command": " ".join(sys.argv)}).encode())

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)  # closing drops the lock
            self.fd = None


def truncate_history(path: Path, step: int) -> None:
    """Keep the rows of ``metrics.jsonl`` up to ``step`` (all of them logged before the
    checkpoint of that step): a resumed run logs the later steps again. ``step`` 0: empty it."""
    if not path.exists():
        return
    keep = []
    for line in path.read_text().splitlines():
        try:
            if json.loads(line)["step"] <= step:
                keep.append(line + "\n")
        except (ValueError, KeyError, TypeError):
            break  # a torn last line from a killed run
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(keep))
    os.replace(tmp, path)
