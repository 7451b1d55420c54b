"""End-to-end cost of the optimizer: solo_4_2bit against adamw32 in whole small-scale runs.

Reads ``<records>/<scale>/<task>/{adamw32,solo_4_2bit}/seed0.json`` from one or more record
folders (default ``results/bench/e2e/rep*``; ``make bench-e2e`` makes them: the runs repeated,
the two optimizers in alternating order, one run at a time on an otherwise idle machine) and writes ``results/bench/e2e.{md,json}``: training time
(forward, backward and optimizer step; evaluation excluded) per run, the mean optimizer step,
and the ratio of the mean training times. Target (issue 8): solo_4_2bit at most 5% longer.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OPTIMS = ["adamw32", "solo_4_2bit"]


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
        r = json.loads(path.read_text())
        if r["time"].get("train_s") is None:
            raise SystemExit(f"{path}: no time.train_s (made before it was recorded); rerun "
                             "with `make bench-e2e`")
        runs.append({"record": str(path), "train_s": r["time"]["train_s"],
                     "step_ms_mean": r["time"]["step_ms_mean"], "wall_s": r["time"]["wall_s"],
                     "steps": r["time"]["steps"], "metrics": r["metrics"],
                     "hardware": _hardware(r.get("provenance", {})),
                     "git_sha": r.get("provenance", {}).get("git_sha")})
    if not runs:
        raise SystemExit(f"no record of {task}/{optim} at scale {scale} in {records}: run "
                         "`make bench-e2e`")
    return runs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--tasks", nargs="+", default=["swin", "transformer"])
    ap.add_argument("--scale", default="small")
    ap.add_argument("--records", nargs="+",
                    default=sorted(str(p) for p in (ROOT / "results" / "bench" / "e2e").glob("rep*")))
    ap.add_argument("--out", default=str(ROOT / "results" / "bench"))
    args = ap.parse_args()
    rows = []
    for task in args.tasks:
        runs = {o: load(args.records, args.scale, task, o) for o in OPTIMS}
        base = statistics.mean(r["train_s"] for r in runs["adamw32"])
        for o in OPTIMS:
            train = [r["train_s"] for r in runs[o]]
            rows.append({"task": task, "optim": o, "runs": runs[o], "train_s_mean": statistics.mean(train),
                         "ratio_train": statistics.mean(train) / base})
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "e2e.json").write_text(json.dumps(rows, indent=1))
    lines = ["# End to end: small-scale runs, solo_4_2bit vs adamw32", "",
             "Training time = forward + backward + optimizer step over a whole run (evaluation "
             "excluded), from the runs' records; runs alternate between the two optimizers. "
             "Target: solo_4_2bit at most 1.05x adamw32.", "",
             "| task | optimizer | runs | train s (each run) | mean train s | x adamw32 | "
             "optimizer step ms | wall s |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        each = ", ".join(f"{x['train_s']:.0f}" for x in r["runs"])
        step = statistics.mean(x["step_ms_mean"] for x in r["runs"])
        wall = statistics.mean(x["wall_s"] for x in r["runs"])
        lines.append(f"| {r['task']} | {r['optim']} | {len(r['runs'])} | {each} | "
                     f"{r['train_s_mean']:.0f} | {r['ratio_train']:.3f} | {step:.2f} | "
                     f"{wall:.0f} |")
    hw = {x["hardware"] for r in rows for x in r["runs"] if x["hardware"]}
    if hw:
        lines += ["", "Hardware: " + "; ".join(sorted(hw))]
    (out / "e2e.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
