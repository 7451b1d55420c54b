"""The command-line tools (``python scripts/<name>.py``: tables, figures, benchmarks, sweeps on
Slurm) and the code they share, importable as ``scripts.<name>`` once ``make setup`` has
installed the checkout."""
