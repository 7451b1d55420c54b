"""End-to-end cost of the optimizer: solo_4_2bit against adamw32 in whole small-scale runs.

Reads ``<records>/<scale>/<task>/<optim>/seed0.json`` (``--optims``, default adamw32 as the
baseline and solo_4_2bit; experiments.records validates each) from one or more record
folders (default ``results/bench/e2e/rep*``; ``make bench-e2e`` makes them: the runs repeated,
the two optimizers in alternating order, one run at a time on an otherwise idle machine) and writes ``results/bench/e2e.{md,json}``: training time
(forward, backward and optimizer step; evaluation excluded) per run, the mean optimizer step,
and the ratio of the mean training times, in the layout of table_layouts.E2E_COLUMNS. Target:
solo_4_2bit at most 5% longer (docs/speed.md).
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from experiments.optimizers import OPTIMIZERS
from experiments.records import RecordError, load_record
from scripts.table_layouts import E2E_COLUMNS
from scripts.table_render import md_columns

ROOT = Path(__file__).resolve().parents[1]


def _hardware(prov: dict) -> str | None:
    if not prov.get("cpu"):
        return None
    gpu = f", {prov['gpu']}" if prov.get("gpu") else ""
    return f"{prov['cpu']} ({prov.get('cpu_threads')} torch threads){gpu}"


def load(records: list[str], scale: str, task: str, optim: str) -> list[dict]:
    runs = []
    for folder in records:
        path = Path(folder) / scale / task / optim / "seed0.json"
        if not path.exists():
            continue
        try:
            r = load_record(path, root=folder)
        except RecordError as e:
            raise SystemExit(f"bad record: {e}") from None
        if r["time"].get("train_s") is None:
            raise SystemExit(f"{path}: no time.train_s (made before it was recorded); rerun "
                             "with `make bench-e2e`")
        runs.append({"record": str(path), "train_s": r["time"]["train_s"],
                     "step_ms_mean": r["time"]["step_ms_mean"], "wall_s": r["time"]["wall_s"],
                     "steps": r["time"]["steps"], "metrics": r["metrics"],
                     "hardware": _hardware(r["provenance"]),
                     "git_sha": r["provenance"]["git_sha"]})
    if not runs:
        raise SystemExit(f"no record of {task}/{optim} at scale {scale} in {records}: run "
                         "`make bench-e2e`")
    return runs


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--tasks", nargs="+", default=["swin", "transformer"])
    ap.add_argument("--scale", default="small")
    ap.add_argument("--optims", nargs="+", default=["adamw32", "solo_4_2bit"],
                    choices=sorted(OPTIMIZERS), metavar="OPTIM",
                    help="optimizers to compare; the first is the baseline of the ratio")
    ap.add_argument("--records", nargs="+",
                    default=sorted(str(p) for p in (ROOT / "results" / "bench" / "e2e").glob("rep*")))
    ap.add_argument("--out", default=str(ROOT / "results" / "bench"))
    args = ap.parse_args(argv)
    baseline, candidates = args.optims[0], args.optims[1:]
    rows = []
    for task in args.tasks:
        runs = {o: load(args.records, args.scale, task, o) for o in args.optims}
        base = statistics.mean(r["train_s"] for r in runs[baseline])
        for o in args.optims:
            train = [r["train_s"] for r in runs[o]]
            rows.append({"task": task, "optim": o, "runs": runs[o], "train_s_mean": statistics.mean(train),
                         "ratio_train": statistics.mean(train) / base})
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "e2e.json").write_text(json.dumps(rows, indent=1))
    others = ", ".join(candidates)
    lines = [f"# End to end: {args.scale}-scale runs, {others} vs {baseline}", "",
             "Training time = forward + backward + optimizer step over a whole run (evaluation "
             "excluded), from the runs' records; runs alternate between the "
             f"{'two ' if len(args.optims) == 2 else ''}optimizers. "
             f"Target: {others} at most 1.05x {baseline}.", "",
             md_columns(E2E_COLUMNS, rows, baseline=baseline)]
    hw = {x["hardware"] for r in rows for x in r["runs"] if x["hardware"]}
    if hw:
        lines += ["", "Hardware: " + "; ".join(sorted(hw))]
    (out / "e2e.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
