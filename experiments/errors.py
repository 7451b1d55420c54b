"""What can stop a run, each with a message that names the problem and the fix.

``run.py`` prints a :class:`RunError` as one line and exits 1, without a traceback: these are
the user's to fix (a path, a flag, a folder), not bugs.
"""

import contextlib
import os


class RunError(RuntimeError):
    """A run cannot start or continue for a reason the message explains."""


class DataNotFound(RunError, FileNotFoundError):
    """A data path is missing; the message names it and says how to get the data."""


class CheckpointError(RunError):
    """ckpt.pt cannot be resumed: unreadable, or written by another optimizer, config or world
    size. The message names the file and what differs, and says how to start over."""


class RunFolderBusy(RunError):
    """Another process holds the run folder's lock; the message names it."""


class NonFiniteLoss(RunError):
    """The loss became NaN/inf: the run stops, leaves a crash checkpoint and writes no record."""


class ConfigError(RunError):
    """A config value that cannot work (a negative seed, lr=fast, a batch larger than the data);
    the message names the key, the value and what is allowed."""


class FolderNotWritable(RunError):
    """The records or the run folder cannot be written; found before training, not after."""


class RecordExists(RunError):
    """The cell already has a record, and this run would replace it without ``overwrite=true``."""


class DirtyTree(RunError):
    """A record for the committed records folder from code with uncommitted changes."""


def debug() -> bool:
    """``SOLO_DEBUG=1``: show the traceback of a RunError instead of its one line."""
    return os.environ.get("SOLO_DEBUG", "") not in ("", "0")


@contextlib.contextmanager
def one_line_errors():
    """A :class:`RunError` inside becomes ``error: <message>`` on stderr and exit status 1,
    without a traceback (``SOLO_DEBUG=1`` keeps it)."""
    try:
        yield
    except RunError as err:
        if debug():
            raise
        raise SystemExit(f"error: {err}") from None
