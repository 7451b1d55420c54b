"""Figures from real small runs: state distributions, loss curves, ablations.

Called by make_figures.py. Each function writes a CSV and a PNG into ``out``:

- state_distribution: v (Adam's second moment) of the small-scale Swin run at several steps,
  exact (fp32) and after 2-bit DE / zero-free linear / log quantization at block 128 and 2048;
- loss_curves: per-step training loss of the small-scale records, mean and min-max band over
  seeds (from each run's ``metrics.jsonl``; without outputs/ the committed CSV is re-plotted);
- ablations: the cells of the ablation sweeps (scripts/sweeps/ablation_*.yaml), each read
  from the record (or crash note) the sweep's own run would write, as a table and a figure per
  sweep.
"""

from __future__ import annotations

import csv
import json
import math
from collections import defaultdict
from pathlib import Path

import matplotlib.pyplot as plt
import torch

from experiments.optimizers import OPTIMIZERS
from experiments.records import load_record, load_records

ROOT = Path(__file__).resolve().parents[1]

RUNS = ROOT / "results" / "runs"
METRIC = {"swin": ("top1", "top-1 %"), "dcn": ("auc", "AUC %"), "transformer": ("bleu", "BLEU"),
          "llama": ("heldout_acc", "held-out acc %"), "hstu": ("hr", "HR@10 %"),
          "glue": ("glue_avg", "GLUE avg %")}


def write_csv(path: Path, header: list[str], rows: list[list]) -> None:
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)


def _read_csv(path: Path) -> list[dict]:
    with path.open() as f:
        return list(csv.DictReader(f))


# ---------------------------------------------------------------- state distribution

STATE_STEPS = (10, 100, 1000)
STATE_QUANTIZERS = ("fp32", "de", "linear", "log")
BINS = torch.linspace(-16, 0, 65)  # log10 v


def _swin_v_snapshots(steps=STATE_STEPS) -> dict[int, list[torch.Tensor]]:
    """Train the small-scale Swin (adamw32, seed 0, its real recipe) and keep every weight's v."""
    import solo
    from experiments import ranks, training
    from experiments.config import compose
    from experiments.swin import data as swin
    from experiments.swin import model as swin_model

    cfg = compose(["task=swin", "scale=small", "optim=adamw32"])
    hp = cfg.scale
    ranks.set_seed(0)
    model = swin_model.build(hp)
    opt = solo.PRESETS["adamw32"](training.param_groups(model, hp.weight_decay,
                                                      skip=model.no_weight_decay()),
                                  lr=hp.lr, betas=(0.9, 0.999), weight_decay=hp.weight_decay)
    (xtr, ytr, _, _), mean, std, _ = swin.in_memory(hp)
    snaps, step = {}, 0
    while step < max(steps):
        epoch = step // (len(xtr) // hp.batch_size)
        for idx in swin.global_batches(len(xtr), hp.batch_size, 0, epoch, 0, 0, 1):
            x = (swin.augment(xtr[idx], hp) - mean) / std
            loss = torch.nn.functional.cross_entropy(model(x), ytr[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
            if step in steps:
                snaps[step] = [opt.state[p]["exp_avg_sq"].clone() for p in model.parameters()
                               if p.dim() >= 2]
            if step >= max(steps):
                break
    return snaps


def state_distribution(out: Path) -> None:
    import solo

    snaps = _swin_v_snapshots()
    gen = torch.Generator().manual_seed(0)
    rows = []
    for step, vs in snaps.items():
        for block in (128, 2048):
            for q in STATE_QUANTIZERS:
                if q == "fp32":
                    vals = torch.cat([v.flatten() for v in vs])
                else:
                    vals = torch.cat([solo.quantize(v, bits=2, quantizer=q, block_size=block,
                                                    generator=gen).dequantize().flatten()
                                      for v in vs])
                zero = float((vals <= 0).float().mean())
                hist = torch.histc(vals[vals > 0].log10().clamp(-16, 0), bins=64, min=-16, max=0)
                hist = hist / max(vals.numel(), 1)
                for i, h in enumerate(hist.tolist()):
                    rows.append([step, block, q, round(float(BINS[i] + BINS[i + 1]) / 2, 3),
                                 round(h, 6), round(zero, 6)])
    write_csv(out / "state_distribution.csv",
               ["step", "block", "quantizer", "log10_v", "fraction", "zero_fraction"], rows)

    fig, axes = plt.subplots(len(STATE_STEPS), 2, figsize=(10, 2.6 * len(STATE_STEPS)),
                             sharex=True)
    for i, step in enumerate(STATE_STEPS):
        for j, block in enumerate((128, 2048)):
            ax = axes[i][j]
            for q in STATE_QUANTIZERS:
                sel = [r for r in rows if r[0] == step and r[1] == block and r[2] == q]
                label = f"{q} (zeros {100 * sel[0][5]:.0f}%)" if q != "fp32" else "fp32"
                ax.step([r[3] for r in sel], [r[4] for r in sel], where="mid", label=label)
            ax.set_title(f"step {step}, block {block}", fontsize=9)
            ax.legend(fontsize=7)
    for ax in axes[-1]:
        ax.set_xlabel("log10 v (2-bit quantizers)")
    fig.suptitle("Second moment v of the small Swin run (adamw32, seed 0): exact and quantized")
    fig.tight_layout()
    fig.savefig(out / "state_distribution.png", dpi=110)
    plt.close(fig)


# ---------------------------------------------------------------- loss curves


def _records(scale: str = "small") -> list[dict]:
    return [r for r in load_records(RUNS) if r["scale"] == scale]


def _registry_order(optims) -> list[str]:
    """Optimizer names in the registry's order (the tables' order), unknown ones last."""
    order = list(OPTIMIZERS)
    return sorted(set(optims), key=lambda o: (order.index(o) if o in order else len(order), o))


def _curve(run_dir: Path, points: int = 100) -> list[tuple[int, float]]:
    """(step, mean loss over a window) from metrics.jsonl; a resumed run's repeats overwrite."""
    by_step = {}
    for line in (run_dir / "metrics.jsonl").read_text().splitlines():
        row = json.loads(line)
        if "loss" in row:
            by_step[row["step"]] = row["loss"]
    steps = sorted(by_step)
    if not steps:
        return []
    width = max(1, math.ceil(len(steps) / points))
    out = []
    for i in range(0, len(steps), width):
        chunk = steps[i : i + width]
        out.append((chunk[-1], sum(by_step[s] for s in chunk) / len(chunk)))
    return out


def loss_curves(out: Path) -> None:
    csv_path = out / "loss_curves.csv"
    rows = []
    for rec in _records():
        run_dir = Path(rec["config"]["run_dir"])
        run_dir = run_dir if run_dir.is_absolute() else ROOT / run_dir
        if (run_dir / "metrics.jsonl").exists():
            rows += [[rec["task"], rec["optim"], rec["seed"], s, round(v, 5)]
                     for s, v in _curve(run_dir)]
    if rows:
        write_csv(csv_path, ["task", "optim", "seed", "step", "loss"], rows)
    elif csv_path.exists():
        print("loss_curves: no run directories here (outputs/); re-plotting the committed CSV")
        rows = [[r["task"], r["optim"], int(r["seed"]), int(r["step"]), float(r["loss"])]
                for r in _read_csv(csv_path)]
    else:
        print("loss_curves: no run directories and no CSV; skipped")
        return
    tasks = sorted({r[0] for r in rows})
    fig, axes = plt.subplots(1, len(tasks), figsize=(4.2 * len(tasks), 3.4))
    for ax, task in zip(axes if len(tasks) > 1 else [axes], tasks):
        for optim in _registry_order(r[1] for r in rows if r[0] == task):
            per_step = defaultdict(list)
            for r in rows:
                if r[0] == task and r[1] == optim:
                    per_step[r[3]].append(r[4])
            steps = sorted(per_step)
            mean = [sum(per_step[s]) / len(per_step[s]) for s in steps]
            n = max(len(v) for v in per_step.values())
            line, = ax.plot(steps, mean, label=f"{optim} (n={n})", linewidth=1)
            if n > 1:
                ax.fill_between(steps, [min(per_step[s]) for s in steps],
                                [max(per_step[s]) for s in steps], alpha=0.2,
                                color=line.get_color())
        ax.set_title(f"{task} (small)")
        ax.set_xlabel("step")
        ax.set_yscale("log")
        ax.legend(fontsize=7)
    fig.suptitle("Training loss of the small-scale records (mean, band: min-max over seeds)")
    fig.tight_layout()
    fig.savefig(out / "loss_curves.png", dpi=110)
    plt.close(fig)


# ---------------------------------------------------------------- ablations

def _ov(cell: dict, key: str) -> str:
    """The value of ``key`` (``+`` dropped) among a sweep cell's own overrides, as typed."""
    return next(o.split("=", 1)[1] for o in cell["overrides"] if o.lstrip("+").split("=")[0] == key)


# name: (sweep in scripts/sweeps/, axis label, the cell's setting from its overrides)
ABLATIONS = {
    "quantile": ("ablation_quantile", "quantile p", lambda c: _ov(c, "optim.quantile")),
    "beta1": ("ablation_beta1", "beta1", lambda c: _ov(c, "beta1")),
    "block": ("ablation_block", "v quantizer / block",
              lambda c: "/".join([_ov(c, "optim.block_size").strip("[]").split(",")[1],
                                  _ov(c, "optim.quantizers").strip("[]").split(",")[1]])),
}


def _ablation_rows(scale: str = "small") -> list[list]:
    """[ablation, task, optim, setting, seed, value, metric label] of every sweep cell with a
    record ("crash": only a crash note), in the sweeps' order; cells not run yet are left out."""
    from scripts.sweep_file import cells, load_sweep

    rows = []
    for name, (sweep, _, setting) in ABLATIONS.items():
        sweep = load_sweep(sweep)
        sweep["fixed"] = [*(sweep.get("fixed") or []), f"records_dir={RUNS}"]  # not the env's
        for cell in cells(sweep, scale):
            note = cell["record"].with_name(f"crash-{cell['record'].name}")
            path = cell["record"] if cell["record"].exists() else note
            if not path.exists():
                continue
            rec = load_record(path, RUNS)
            key, label = METRIC[rec["task"]]
            value = "crash" if path == note else round(rec["metrics"][key], 3)
            rows.append([name, rec["task"], rec["optim"], setting(cell), rec["seed"], value,
                         label])
    return rows


def ablations(out: Path) -> None:
    lines = ["# Small-scale ablations", "",
             "From records under results/runs/small/<task>/<optim>/<override>/ (sweeps "
             "scripts/sweeps/ablation_*.yaml; one seed; Swin at 10 of its 40 epochs; `crash`: the "
             "loss became NaN/inf, from the run's crash note). "
             "Small-scale sanity runs, not the paper's numbers.", ""]
    rows = _ablation_rows()
    if not rows:
        print("ablations: no ablation records yet; skipped")
        return
    write_csv(out / "ablations.csv",
               ["ablation", "task", "optim", "setting", "seed", "value", "metric"], rows)
    for name in ABLATIONS:
        sel = [r for r in rows if r[0] == name]
        if not sel:
            continue
        tasks = sorted({r[1] for r in sel})
        lines += [f"## {ABLATIONS[name][1]}", ""]
        for task in tasks:
            settings = sorted({r[3] for r in sel if r[1] == task}, key=_setting_key)
            optims = sorted({r[2] for r in sel if r[1] == task})
            lines += [f"{task} ({METRIC[task][1]})", "",
                      "| optim | " + " | ".join(settings) + " |",
                      "|---|" + "---|" * len(settings)]
            for o in optims:
                vals = {r[3]: r[5] for r in sel if r[1] == task and r[2] == o}
                lines.append(f"| {o} | " + " | ".join(
                    "–" if s not in vals else vals[s] if isinstance(vals[s], str)
                    else f"{vals[s]:.2f}" for s in settings) + " |")
            lines.append("")
        fig, axes = plt.subplots(1, len(tasks), figsize=(4.5 * len(tasks), 3.2))
        for ax, task in zip(axes if len(tasks) > 1 else [axes], tasks):
            settings = sorted({r[3] for r in sel if r[1] == task}, key=_setting_key)
            for o in sorted({r[2] for r in sel if r[1] == task}):
                vals = {r[3]: r[5] for r in sel if r[1] == task and r[2] == o}
                xs = [i for i, s in enumerate(settings) if isinstance(vals.get(s), float)]
                ax.plot(xs, [vals[settings[i]] for i in xs], "o-", label=o)
                for i, s in enumerate(settings):
                    if vals.get(s) == "crash":
                        ax.annotate("crash", (i, 0.02), xycoords=("data", "axes fraction"),
                                    ha="center", fontsize=7, color="red")
            ax.set_xticks(range(len(settings)), settings, fontsize=7, rotation=30)
            ax.set_title(task)
            ax.set_xlabel(ABLATIONS[name][1])
            ax.set_ylabel(METRIC[task][1])
            ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(out / f"ablation_{name}.png", dpi=110)
        plt.close(fig)
    (out / "ablations.md").write_text("\n".join(lines) + "\n")


def _setting_key(s: str):
    try:
        return (0, float(s), "")
    except ValueError:
        return (1, 0.0, s)
