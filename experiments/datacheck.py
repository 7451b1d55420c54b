"""Checks of user-given data files, made before training: each failure is one line naming the
path, what is wrong with it (the field, the line) and the fix (run.py prints a RunError so)."""

from pathlib import Path

from experiments.errors import DataNotFound, RunError


class BadData(RunError, ValueError):
    """A data file exists but cannot be used: empty, malformed, a field missing, too small."""


def require_file(path, what: str, fix: str) -> Path:
    """``path`` as a Path when it is a non-empty regular file; else DataNotFound (missing) or
    BadData (a folder, empty), each naming ``what`` it should be and ``fix``."""
    path = Path(path)
    if not path.exists():
        raise DataNotFound(f"{what} not found: {path} does not exist; {fix}")
    if not path.is_file():
        raise BadData(f"{what} {path} is a directory, not a file; {fix}")
    if path.stat().st_size == 0:
        raise BadData(f"{what} {path} is empty; {fix}")
    return path


def require_rows(n: int, batch_size: int, what: str, where, key: str = "scale.batch_size"
                 ) -> None:
    """Refuse a training set of ``n`` items that cannot fill one global batch of
    ``batch_size`` (0 steps: nothing to train, nothing to checkpoint)."""
    if n < batch_size:
        raise BadData(f"{where} gives {n} {what}, fewer than one global batch ({key}="
                      f"{batch_size}); give more data or a smaller {key}")
