"""The command-line tools (``python scripts/<name>.py``: tables, figures, benchmarks, sweeps on
Slurm) and the code they share, importable as ``scripts.<name>`` once ``make setup`` has
installed the checkout.

Importing this package refuses to go on when the script being run belongs to another checkout
than this package: one virtual environment (an editable install of checkout A) used from
checkout B would otherwise run A's code, read A's configs and write A's records, silently.
"""

import sys
from pathlib import Path


def _refuse_another_checkout() -> None:
    entry = getattr(sys.modules.get("__main__"), "__file__", None)
    if not entry:
        return
    entry_dir = Path(entry).resolve().parent
    here = Path(__file__).resolve().parent
    checkout = entry_dir.parent
    is_checkout = (checkout / "run.py").is_file() and (checkout / "solo").is_dir()
    if entry_dir.name != "scripts" or entry_dir == here or not is_checkout:
        return
    script = f"scripts/{Path(entry).name}"
    raise SystemExit(
        f"{script} belongs to the checkout {checkout}, but this Python imports the code of "
        f"{here.parent} (its environment is an editable install of that checkout), so it would "
        f"run that checkout's code on that checkout's configs and records. Fix: run `make setup` "
        f"in {checkout} and use its .venv, or run `python -m {script[:-3].replace('/', '.')}` "
        f"from {checkout}, or set PYTHONPATH={checkout}.")


_refuse_another_checkout()
