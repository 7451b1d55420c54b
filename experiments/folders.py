"""Run folders: their short variant names, one writer each (a lock), their metrics history.

A run folder is ``<outputs>/<task>/<optim>/<scale>/seed<k>[/<variant>]``; records mirror it
(experiments.records.record_path).
"""

import fcntl
import json
import os
import socket
import sys
import time
from pathlib import Path

from omegaconf import OmegaConf

from experiments.errors import RunFolderBusy

GROUP_PREFIXES = ("optim.", "scale.")


def variant_name(overrides, exclude) -> str:
    """The folder name of a run's extra overrides: sorted, ``+`` dropped, and the ``optim.`` /
    ``scale.`` prefix dropped where the rest of the key is unique, e.g. ``epochs=10,quantile=0.5``
    for ``+optim.quantile=0.5 scale.epochs=10``; "" when there are none."""
    items = {}
    for o in overrides:
        key, _, value = str(o).partition("=")
        key = key.lstrip("+~")
        if key not in set(exclude):
            items[key] = value.replace("/", "_")
    rest = [k.split(".", 1)[1] for k in items if k.startswith(GROUP_PREFIXES)]

    def short(key):
        tail = key.split(".", 1)[1] if key.startswith(GROUP_PREFIXES) else None
        return tail if tail and rest.count(tail) == 1 and tail not in items else key

    return ",".join(sorted(f"{short(k)}={v}" for k, v in items.items()))


def register_resolvers() -> None:
    """``${run_variant:...}`` for conf/config.yaml (see :func:`experiments.register_configs`)."""
    if not OmegaConf.has_resolver("run_variant"):
        OmegaConf.register_new_resolver("run_variant", variant_name)


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
