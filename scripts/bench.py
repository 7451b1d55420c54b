"""Optimizer step-time benchmark: our presets against torch, torchao and bitsandbytes.

All optimizers run in one process on the same parameters (transformer-block shapes), warm-up
steps excluded (their time is reported as ``first_step_ms``, which includes torch.compile for
torchao), median of ``--steps`` timed steps. Writes ``results/bench/<device>.json`` (rows with
optimizer, params, ms_per_step, ratio_to_foreach, state_bytes, first_step_ms) and a markdown
table beside it. ``peak_step_bytes`` (transient memory during a step) is not measured yet.
Our quantized presets use the fused CPU step (solo/fused.py) when it builds;
``solo_4_2bit_reference`` is the eager reference.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch

import solo

OURS = ["adamw32", "solo_4_2bit", "solo_2bit", "adamw8bit", "adamw4bit"]


def transformer_params(target: int, d: int = 512) -> list[torch.nn.Parameter]:
    """Blocks of (qkv, out, fc1, fc2, 2 norms, biases) until about ``target`` parameters."""
    ps: list[torch.nn.Parameter] = []
    while sum(p.numel() for p in ps) < target:
        for shape in [(3 * d, d), (3 * d,), (d, d), (d,), (4 * d, d), (4 * d,), (d, 4 * d),
                      (d,), (d,), (d,), (d,), (d,)]:
            ps.append(torch.nn.Parameter(torch.randn(shape) * 0.02))
    return ps


def peers() -> dict:
    out = {"torch_adamw_foreach": lambda p: torch.optim.AdamW(p, lr=1e-3, foreach=True),
           "torch_adamw_fused": lambda p: torch.optim.AdamW(p, lr=1e-3, fused=True)}
    for name in OURS:
        out[name] = lambda p, name=name: solo.PRESETS[name](p, lr=1e-3)
    # the eager reference the fused CPU step is tested against
    out["solo_4_2bit_reference"] = lambda p: solo.PRESETS["solo_4_2bit"](p, lr=1e-3, fused=False)
    try:
        import torchao.optim as tao

        out["torchao_adamw8bit"] = lambda p: tao.AdamW8bit(p, lr=1e-3)
        out["torchao_adamw4bit"] = lambda p: tao.AdamW4bit(p, lr=1e-3)
    except ImportError:
        pass
    try:
        import bitsandbytes as bnb

        out["bnb_adamw8bit"] = lambda p: bnb.optim.AdamW8bit(p, lr=1e-3)
    except ImportError:
        pass
    return out


def bench(make, params, steps: int, device) -> dict:
    ps = [torch.nn.Parameter(p.detach().clone().to(device)) for p in params]
    g = torch.Generator(device=device).manual_seed(0)
    for p in ps:
        p.grad = torch.randn(p.shape, generator=g, device=device) * 1e-3
    opt = make(ps)
    t = time.perf_counter()
    opt.step()
    first = time.perf_counter() - t
    opt.step()
    times = []
    for _ in range(steps):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        opt.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
    return {"ms_per_step": 1e3 * statistics.median(times), "first_step_ms": 1e3 * first,
            "state_bytes": solo.state_bytes(opt)["total"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--params", type=float, nargs="+", default=[10e6])
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--only", nargs="*", help="optimizer names to run (default: all)")
    ap.add_argument("--out", default="results/bench")
    args = ap.parse_args()
    device = torch.device(args.device)
    rows = []
    for target in args.params:
        params = transformer_params(int(target))
        n = sum(p.numel() for p in params)
        for name, make in peers().items():
            if args.only and name not in args.only:
                continue
            try:
                r = bench(make, params, args.steps, device)
            except Exception as e:  # a peer that cannot run here is reported, not hidden
                print(f"{name}: failed: {type(e).__name__}: {e}")
                continue
            rows.append({"optimizer": name, "params": n, **r})
            print(f"{name:22s} {n / 1e6:6.1f}M  {r['ms_per_step']:9.1f} ms/step  "
                  f"first {r['first_step_ms']:9.1f} ms  state {r['state_bytes'] / 2**20:8.1f} MiB")
        base = next((r["ms_per_step"] for r in rows
                     if r["optimizer"] == "torch_adamw_foreach" and r["params"] == n), None)
        for r in rows:
            if r["params"] == n and base:
                r["ratio_to_foreach"] = r["ms_per_step"] / base
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    meta = {"device": args.device, "cpu": platform.processor() or platform.machine(),
            "threads": torch.get_num_threads(), "torch": torch.__version__,
            "steps": args.steps}
    (out / f"{args.device}.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    lines = [f"# Optimizer step time ({args.device}, {meta['threads']} threads, torch "
             f"{meta['torch']}, median of {args.steps} steps)", "",
             "| optimizer | params | ms/step | x torch foreach | first step ms | state MiB |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['optimizer']} | {r['params'] / 1e6:.1f}M | {r['ms_per_step']:.1f} | "
                     f"{r.get('ratio_to_foreach', float('nan')):.2f} | {r['first_step_ms']:.0f} | "
                     f"{r['state_bytes'] / 2**20:.1f} |")
    (out / f"{args.device}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
