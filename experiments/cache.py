"""Caches of preprocessed data (Criteo arrays, BPE vocabularies, tokenizers): reused only while
their inputs are unchanged, and never seen half-written.

A cache is a folder whose ``done`` file holds the JSON *key* it was built for: the
:func:`fingerprint` of each source file plus the preprocessing parameters. :func:`cached_build`
returns the folder when its key matches, else builds a new one beside it and renames it into
place, ``done`` written last: a preprocess killed at any point leaves the old folder (with its old
key) or none, never a ``done`` over partial files. Builders of one folder take turns (a lock
file beside it); on file systems without ``flock`` they build side by side and the first rename
wins, so readers still only ever see a whole folder.
"""

import fcntl
import hashlib
import json
import logging
import os
import secrets
import shutil
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger(__name__)

DONE = "done"
SAMPLE_BYTES = 1 << 20  # hashed at each end of a source: catches edits a size check misses


def fingerprint(path, sample_bytes: int = SAMPLE_BYTES) -> dict:
    """What identifies the content of the file ``path`` without reading all of it (Criteo's
    TSV is 11 GB): its size (bytes), modification time (ns) and a BLAKE2b hash of its first and
    last ``sample_bytes`` bytes. Any write changes the time, so a touched file counts as
    changed too: an edit in the middle of a file keeps size and ends, and only the time shows
    it."""
    path = Path(path)
    st = path.stat()
    h = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as f:
        h.update(f.read(sample_bytes))
        if st.st_size > sample_bytes:
            f.seek(max(sample_bytes, st.st_size - sample_bytes))
            h.update(f.read(sample_bytes))
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "blake2b_head_tail": h.hexdigest()}


def read_key(folder) -> dict | None:
    """The key the cache ``folder`` was built for; None when it has none (absent, unfinished,
    or from a version that wrote no key)."""
    try:
        key = json.loads((Path(folder) / DONE).read_text())
    except (OSError, ValueError):
        return None
    return key if isinstance(key, dict) else None


def _canonical(key: dict) -> dict:
    """``key`` as it reads back from JSON (tuples become lists), to compare like with like."""
    return json.loads(json.dumps(key, sort_keys=True))


class _Lock:
    """An exclusive ``flock`` on ``path`` (released on exit, or by the kernel when the holder
    dies); a no-op where the file system refuses locks (the rename protocol stays safe)."""

    def __init__(self, path: Path):
        self.path, self.fd = path, None

    def __enter__(self):
        try:
            self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError:
            return self
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log.info("waiting for another process building %s", self.path.name[1:-5])
            fcntl.flock(self.fd, fcntl.LOCK_EX)
        except OSError:  # e.g. NFS without lock support
            os.close(self.fd)
            self.fd = None
        return self

    def __exit__(self, *exc):
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def _remove(folder: Path) -> None:
    """Move ``folder`` aside, then delete it: its name is free at once, whatever rmtree takes."""
    aside = folder.with_name(f".{folder.name}.old-{secrets.token_hex(4)}")
    try:
        folder.rename(aside)
    except FileNotFoundError:
        return
    shutil.rmtree(aside, ignore_errors=True)


def cached_build(folder, key: dict, build: Callable[[Path], None]) -> Path:
    """The cache ``folder`` built for ``key`` (JSON-serializable: fingerprints, parameters):
    returned as it is when its ``done`` holds ``key``, else rebuilt by ``build(tmp)``, which
    writes the cache's files into the empty folder ``tmp``. An exception in ``build`` (or a
    kill) leaves no new ``done`` and no partial files under ``folder``'s name."""
    folder, key = Path(folder), _canonical(key)
    if read_key(folder) == key:
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    with _Lock(folder.with_name(f".{folder.name}.lock")):
        if read_key(folder) == key:  # built by the process we waited for
            return folder
        tmp = folder.with_name(f".{folder.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}")
        tmp.mkdir()
        try:
            build(tmp)
            (tmp / DONE).write_text(json.dumps(key, indent=1, sort_keys=True) + "\n")
            while True:
                try:
                    tmp.rename(folder)  # atomic; fails while a folder has the name
                    break
                except OSError:
                    if not folder.exists():  # not the name taken: e.g. a read-only parent
                        raise
                    if read_key(folder) == key:  # an unlocked builder finished first
                        shutil.rmtree(tmp, ignore_errors=True)
                        break
                    _remove(folder)  # stale (another key) or unfinished (no key)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    log.info("built %s", folder)
    return folder
