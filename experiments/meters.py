"""A run's step meters: its last loss, optimizer-step times and throughput.

The meters are a plain dict so that the checkpoint carries them and a resumed run counts on
where it stopped; the record's ``time`` section sums them up.
"""


def new() -> dict:
    """Meters of a run that has taken no step."""
    return {"loss": None, "first_step_ms": None, "step_ms_sum": 0.0, "steps_timed": 0,
            "items": 0, "train_s": 0.0}


def count(m: dict, loss: float, items: int, step_s: float, train_s: float,
          first_here: bool) -> float:
    """Count one step in ``m``: ``loss`` (this rank's), ``items`` (over all ranks),
    ``step_s`` the optimizer step's seconds, ``train_s`` the whole step's (forward, backward
    and optimizer step). Returns the throughput so far, items per second."""
    # The first step of each process allocates state (and compiles, for peers): untimed.
    if first_here:
        m["first_step_ms"] = m["first_step_ms"] or 1e3 * step_s
    else:
        m["step_ms_sum"] += 1e3 * step_s
        m["steps_timed"] += 1
    m["items"] += items
    m["train_s"] += train_s
    m["loss"] = loss
    return m["items"] / m["train_s"]


def time_section(m: dict, wall_s: float, unit: str, steps: int) -> dict:
    """The record's ``time`` section: ``wall_s`` seconds over all attempts, the mean optimizer
    step (ms; the first step of a process only when no other was timed), the throughput in
    ``unit`` per second and ``steps``."""
    step_ms = m["step_ms_sum"] / m["steps_timed"] if m["steps_timed"] else m["first_step_ms"]
    return {"wall_s": wall_s, "step_ms_mean": step_ms,
            "throughput": m["items"] / m["train_s"] if m["train_s"] else None,
            "train_s": m["train_s"],  # forward, backward and step, all attempts
            "throughput_unit": f"{unit}/s", "steps": steps}
