"""What can stop a run, each with a message that names the problem and the fix.

``run.py`` prints a :class:`RunError` as one line and exits 1, without a traceback: these are
the user's to fix (a path, a flag, a folder), not bugs.
"""


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
