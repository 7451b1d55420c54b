"""Optimizer step-time benchmark: our presets against torch, torchao and bitsandbytes.

All optimizers run in one process on the same parameters (transformer-block shapes), warm-up
steps excluded (their time is reported as ``first_step_ms``, which includes torch.compile for
torchao and loading the C++ extension for ours), median of ``--steps`` timed steps. Writes
``results/bench/<device>.json`` (rows with optimizer, params, ms_per_step, ratio_to_foreach,
state_bytes, peak_step_bytes, first_step_ms) and a markdown table beside it.

On CUDA (``make bench-gpu``) the rows are :data:`GPU_SET` (registry names), the baseline of the
ratio is torch's fused AdamW, tensors are made on the GPU, a 1B-parameter model uses width 2048
(fewer, larger tensors), and each row also gets ``pct_copy_bw``: the bytes a step must move at
least (parameter read and write and gradient read in fp32, states read and written) per second,
as a share of the measured copy bandwidth. The Triton step compiles in the first step.

``peak_step_bytes`` is the memory a step adds on top of what the process holds before it: on
Linux CPU, the resident-set high-water mark (VmHWM, reset through /proc/self/clear_refs) after
one more step minus the resident set before it, with glibc's mmap threshold pinned at 256 KiB
so that every large temporary is mapped on allocation and unmapped on free (page-granular;
torch's profiler records no CPU allocations in this build). On CUDA, max_memory_allocated.

Every optimizer of the registry runs (solo.presets and the peers of experiments/optimizers.py,
all with lr 1e-3, betas (preset default, 0.999), no weight decay; a peer whose library is
missing is reported as failed), plus torch's AdamW with foreach and fused, the baseline of the
ratio. Our quantized presets use the fused CPU step (solo/fused.py) when it builds;
``solo_4_2bit_reference`` is our eager reference, ``solow_4_2bit`` the reference SOLO
implementation (scripts/solow_adapter.py; ``make solow`` fetches it).
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch

import solo
from experiments.optimizers import OPTIMIZERS
from experiments.provenance import cpu_name
from scripts import solow_adapter

# The optimizers of the GPU benchmark (docs/speed.md): ours, torch's, torchao's, bitsandbytes',
# and the reference SOLO code, by their registry names (experiments/optimizers.py).
GPU_SET = ["torch_adamw_foreach", "torch_adamw_fused", "solo_4_2bit", "solo_2bit", "adamw4bit",
           "adamw8bit", "solo_4_2bit_reference", "torchao_adamw4bit", "torchao_adamw8bit",
           "bnb_adamw8bit", "solow_4_2bit"]


def transformer_params(target: int, d: int = 512, device="cpu") -> list[torch.nn.Parameter]:
    """Blocks of (qkv, out, fc1, fc2, 2 norms, biases) until about ``target`` parameters."""
    ps: list[torch.nn.Parameter] = []
    total = 0
    while total < target:
        for shape in [(3 * d, d), (3 * d,), (d, d), (d,), (4 * d, d), (4 * d,), (d, 4 * d),
                      (d,), (d,), (d,), (d,), (d,)]:
            ps.append(torch.nn.Parameter(torch.randn(shape, device=device) * 0.02))
            total += ps[-1].numel()
    return ps


def peers() -> dict:
    torch_adamw = OPTIMIZERS["torch_adamw"]
    out = {"torch_adamw_foreach": lambda p: torch_adamw(p, lr=1e-3, foreach=True),
           "torch_adamw_fused": lambda p: torch_adamw(p, lr=1e-3, fused=True)}
    for name, entry in OPTIMIZERS.items():
        out[name] = lambda p, entry=entry: entry(p, lr=1e-3)
    # the eager reference the fused CPU step is tested against
    out["solo_4_2bit_reference"] = lambda p: solo.PRESETS["solo_4_2bit"](p, lr=1e-3, fused=False)
    # what the non-finite-gradient pre-check (one read of every gradient) costs on top of
    # torch's fused kernel; adamw32 itself runs without it, as torch.optim.AdamW does
    out["adamw32_checked"] = lambda p: solo.PRESETS["adamw32"](p, lr=1e-3, check_finite=True)
    out["solow_4_2bit"] = solow_adapter.adamw_4_2bit
    # optimizers and quantizers without a preset (log-unbiased: eager step, no fused kernel)
    out["solo_4_2bit_log_unbiased"] = lambda p: solo.PRESETS["solo_4_2bit"](
        p, lr=1e-3, quantizers=("de", "log-unbiased"))
    out["adam_solo_4_2bit"] = lambda p: solo.Adam(p, lr=1e-3, betas=(0.818, 0.999),
                                                  weight_decay=1e-2, bits=(4, 2))
    out["adafactor_4_2bit"] = lambda p: solo.Adafactor(p, bits=(4, 2), quantizers=("de", "log"))
    return out


def _status_bytes(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field):
                return int(line.split()[1]) * 1024
    raise KeyError(field)


def pin_malloc() -> bool:
    """Make glibc map (and unmap) every allocation over 256 KiB, so RSS follows temporaries."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        m_trim_threshold, m_mmap_threshold = -1, -3
        return bool(libc.mallopt(m_mmap_threshold, 256 << 10)
                    and libc.mallopt(m_trim_threshold, 256 << 10))
    except OSError:
        return False


def peak_step_bytes(opt, device) -> int | None:
    """Memory one step adds on top of what is held before it (see the module docstring)."""
    if device.type == "cuda":
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        opt.step()
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() - base
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        base = _status_bytes("VmRSS:")
    except OSError:
        return None
    opt.step()
    return max(0, _status_bytes("VmHWM:") - base)


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
    peak = peak_step_bytes(opt, device)
    return {"ms_per_step": 1e3 * statistics.median(times), "first_step_ms": 1e3 * first,
            "state_bytes": solo.state_bytes(opt)["total"], "peak_step_bytes": peak}




def copy_gbps(n: int, device, reps: int = 5) -> float:
    """Measured copy bandwidth (GB/s, read + write) for n float32 elements, the yardstick of a
    memory-bound step."""
    src = torch.randn(n, device=device)
    dst = torch.empty_like(src)
    times = []
    for _ in range(reps + 1):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        dst.copy_(src)
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
    return 2 * 4 * n / statistics.median(times[1:]) / 1e9


def _mib(x) -> str:
    return "n/a" if x is None else f"{x / 2**20:.1f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--params", type=float, nargs="+", default=[10e6])
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--only", nargs="*",
                    help="optimizer names to run (default: all on CPU, GPU_SET on CUDA)")
    ap.add_argument("--out", default="results/bench")
    args = ap.parse_args()
    device = torch.device(args.device)
    cuda = device.type == "cuda"
    if cuda and not torch.cuda.is_available():
        sys.exit("--device cuda: no CUDA device here (results/bench/cuda.* only from a real run)")
    only = args.only if args.only else (GPU_SET if cuda else None)
    pinned = pin_malloc()
    rows, failed, largest, copy = [], [], {}, {}
    for target in args.params:
        width = 2048 if cuda and target >= 5e8 else 512
        params = transformer_params(int(target), width, device if cuda else "cpu")
        n = sum(p.numel() for p in params)
        largest[n] = max(p.numel() for p in params) * 4
        copy[n] = copy_gbps(n, device)
        for name, make in peers().items():
            if only and name not in only:
                continue
            try:
                r = bench(make, params, args.steps, device)
            except Exception as e:  # a peer that cannot run here is reported, not hidden
                print(f"{name}: failed: {type(e).__name__}: {e}")
                failed.append({"optimizer": name, "params": n,
                               "error": f"{type(e).__name__}: {e}".splitlines()[0]})
                continue
            moved = 3 * 4 * n + 2 * r["state_bytes"]  # p read + write, g read; states r + w
            r["pct_copy_bw"] = 100 * moved / (r["ms_per_step"] / 1e3) / 1e9 / copy[n]
            rows.append({"optimizer": name, "params": n, **r})
            print(f"{name:22s} {n / 1e6:6.1f}M  {r['ms_per_step']:9.1f} ms/step  "
                  f"first {r['first_step_ms']:9.1f} ms  state {_mib(r['state_bytes'])} MiB  "
                  f"peak step {_mib(r['peak_step_bytes'])} MiB")
        for key, ref in (("ratio_to_foreach", "torch_adamw_foreach"),
                         ("ratio_to_fused", "torch_adamw_fused")):
            base = next((r["ms_per_step"] for r in rows
                         if r["optimizer"] == ref and r["params"] == n), None)
            for r in rows:
                if r["params"] == n and base:
                    r[key] = r["ms_per_step"] / base
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    meta = {"device": args.device, "cpu": cpu_name(), "cores": os.cpu_count(),
            "threads": torch.get_num_threads(), "torch": torch.__version__,
            "steps": args.steps, "malloc_pinned": pinned,
            "fused_cpu_step": solo.fused.extension() is not None,
            "fused_avx2": solo.fused.vectorized(),
            "largest_tensor_bytes": {str(k): v for k, v in largest.items()},
            "copy_gbps": {str(k): v for k, v in copy.items()}}
    if cuda:
        meta["gpu"] = torch.cuda.get_device_name(device)
        meta["cpu"] = meta["gpu"]
        meta["triton_step"] = solo.triton_step.kernel() is not None
        meta["triton_unavailable"] = solo.triton_step.unavailable()
    (out / f"{args.device}.json").write_text(
        json.dumps({"meta": meta, "rows": rows, "failed": failed}, indent=1))
    lines = [f"# Optimizer step time ({args.device}: {meta['cpu']}, {meta['threads']} threads, "
             f"torch {meta['torch']}, median of {args.steps} steps)", "",
             "`peak step MiB`: memory one step adds (see scripts/bench.py); the largest single "
             "parameter is " + ", ".join(f"{_mib(v)} MiB at {k / 1e6:.1f}M"
                                          for k, v in largest.items()) + "; measured copy "
             "bandwidth " + ", ".join(f"{v:.1f} GB/s at {k / 1e6:.1f}M"
                                      for k, v in copy.items()) + ".", "",
             "| optimizer | params | ms/step | x torch foreach | x torch fused | % copy bw | "
             "first step ms | state MiB | peak step MiB |",
             "|---|---|---|---|---|---|---|---|---|"]
    nan = float("nan")
    for r in rows:
        lines.append(f"| {r['optimizer']} | {r['params'] / 1e6:.1f}M | {r['ms_per_step']:.1f} | "
                     f"{r.get('ratio_to_foreach', nan):.2f} | {r.get('ratio_to_fused', nan):.2f} "
                     f"| {r['pct_copy_bw']:.0f} | {r['first_step_ms']:.0f} | "
                     f"{_mib(r['state_bytes'])} | {_mib(r['peak_step_bytes'])} |")
    for f in failed:
        lines.append(f"| {f['optimizer']} | {f['params'] / 1e6:.1f}M | failed: {f['error']} "
                     "| | | | | | |")
    (out / f"{args.device}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
