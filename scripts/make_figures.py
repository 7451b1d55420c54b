"""Regenerate the paper's analysis figures into results/figures/ (PNG + the CSV behind each).

- signal_swamping: the case study of docs/method.md section 5 (solo.analysis), with the
  thresholds of its Corollary and a table of measured vs theoretical thresholds;
- momentum_table: beta' of solo.momentum.adjusted_beta beside the paper's printed table;
- state_distribution, loss_curves, ablations: from real small runs (scripts/figures_runs.py).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from tqdm import tqdm  # noqa: E402

from scripts import figures_runs  # noqa: E402
from scripts.figures_runs import write_csv  # noqa: E402
from solo.analysis import (  # noqa: E402
    CASE_STUDY_QUANTIZERS,
    swamping_case_study,
    swamping_threshold,
)
from solo.momentum import PRINTED_TABLE, adjusted_beta  # noqa: E402

BETAS = [round(0.80 + 0.01 * i, 2) for i in range(20)]
BITS = (2, 3, 4)

# docs/method.md section 5 (the Corollary), derived from the codebooks: solo.analysis.swamping_threshold
THEORY = {q: {b: swamping_threshold(q, b) for b in BITS} for q in ("linear0", "de")}
LABELS = {"linear0": "linear (with 0)", "de": "DE", "log": "log (SOLO, SR)", "fp32": "fp32"}


def signal_swamping(out: Path) -> None:
    rows = []
    grid = [(q, b, beta) for q in CASE_STUDY_QUANTIZERS for b in BITS for beta in BETAS]
    for q, b, beta in tqdm(grid, desc="signal swamping", disable=None):
        rows.append([q, b, beta, round(swamping_case_study(q, b, beta), 4)])
    write_csv(out / "signal_swamping.csv", ["quantizer", "bits", "beta", "mean"], rows)

    fig, axes = plt.subplots(1, len(BITS), figsize=(12, 3.6), sharey=True)
    for ax, b in zip(axes, BITS):
        for q in CASE_STUDY_QUANTIZERS:
            ys = [r[3] for r in rows if r[0] == q and r[1] == b]
            ax.plot(BETAS, ys, marker=".", label=LABELS[q])
        for q, style in (("linear0", ":"), ("de", "--")):
            ax.axvline(THEORY[q][b], color="gray", linestyle=style, linewidth=0.8)
        ax.set_title(f"{b}-bit")
        ax.set_xlabel("beta")
    axes[0].set_ylabel("mean of x~ after 100 steps (true EMA: 0.5)")
    axes[0].legend(fontsize=8)
    fig.suptitle("Signal swamping (dotted: linear threshold, dashed: DE half-levels threshold)")
    fig.tight_layout()
    fig.savefig(out / "signal_swamping.png", dpi=120)
    plt.close(fig)

    # measured threshold: smallest beta from which the state stays stuck (mean > 0.99)
    lines = ["| quantizer | bits | theoretical beta | measured: stuck from beta |", "|---|---|---|---|"]
    for q in ("linear0", "de"):
        for b in BITS:
            ys = {r[2]: r[3] for r in rows if r[0] == q and r[1] == b}
            stuck = [beta for beta in BETAS if all(ys[x] > 0.99 for x in BETAS if x >= beta)]
            measured = f"{min(stuck):.2f}" if stuck else "not within 0.80-0.99"
            lines.append(f"| {LABELS[q]} | {b} | {THEORY[q][b]:.3f} | {measured} |")
    (out / "signal_swamping_thresholds.md").write_text(
        "# Signal swamping: theoretical vs measured thresholds\n\n"
        "Theory (docs/method.md section 5): linear swamps every level above the beta shown, DE half "
        "its levels. Measured: the smallest beta of the grid from which the case study's "
        "state stays at 1.00 (mean > 0.99) for every larger beta.\n\n" + "\n".join(lines) + "\n")


def momentum_table(out: Path) -> None:
    rows = []
    for target, row in PRINTED_TABLE.items():
        for ref, printed in row.items():
            ours = adjusted_beta(0.9, target, ref)
            rows.append([target, ref, printed, round(ours, 4), round(ours - printed, 4)])
    write_csv(out / "momentum_table.csv",
               ["target_bits", "ref_bits", "paper_beta", "ours_beta", "difference"], rows)
    fig, ax = plt.subplots(figsize=(5, 3.6))
    for target in PRINTED_TABLE:
        refs = [r[1] for r in rows if r[0] == target]
        ax.plot(refs, [r[2] for r in rows if r[0] == target], "o", label=f"paper, b'={target}")
        ax.plot(refs, [r[3] for r in rows if r[0] == target], "x--", label=f"ours, b'={target}")
    ax.set_xlabel("reference bits b (beta = 0.9)")
    ax.set_ylabel("beta' for b' bits")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "momentum_table.png", dpi=120)
    plt.close(fig)


FIGURES = {"signal_swamping": signal_swamping, "momentum_table": momentum_table,
           "state_distribution": figures_runs.state_distribution,
           "loss_curves": figures_runs.loss_curves, "ablations": figures_runs.ablations}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", default="results/figures")
    ap.add_argument("--only", nargs="*", choices=sorted(FIGURES), help="default: all")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for name in args.only or FIGURES:
        FIGURES[name](out)
    print(f"wrote {sorted(p.name for p in out.iterdir())}")


if __name__ == "__main__":
    main()
