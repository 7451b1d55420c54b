"""Helpers for the tests of scripts/submit.py (the ``box`` fixture is in conftest.py)."""

from scripts import submit


def call(argv) -> object:
    """submit.py's exit code for ``argv`` (0 when main returns; an error's message is its
    code, as Python's exit status 1), run in this process."""
    try:
        submit.main(argv)
    except SystemExit as e:
        return e.code
    return 0


def files(box) -> dict:
    """Every file under the box's records and outputs folders, with its size and mtime."""
    return {p: (p.stat().st_size, p.stat().st_mtime_ns)
            for d in (box.records, box.outputs) if d.exists() for p in d.rglob("*") if p.is_file()}


def sbatch_calls(box) -> list[str]:
    """The fake sbatch's calls so far, one line each."""
    log = box.calls.read_text().splitlines() if box.calls.exists() else []
    return [line for line in log if line.startswith("sbatch")]
