"""Fuzz of the optimizers' knobs, run in a child process by
test_crash_probes.py.

Each trial draws knobs (most valid, some invalid) and builds the optimizer twice, with the
fused step allowed (``fused`` as drawn) and with the eager reference (``fused=False``), on
copies of the same parameters; steps both on the same gradients, editing ``param_groups``
between steps at random (with a valid or an invalid value) and sometimes adding a group. Both
must accept or refuse each input alike, refusing only with ValueError or TypeError (or
RuntimeError for ``fused=True`` where no fused step exists), and where both step with a
deterministic state format they must compute the same parameters. Prints a JSON summary;
raises AssertionError naming the trial on any disagreement.
"""

import argparse
import copy
import json
import random
import time

import torch

import solo

torch.set_num_threads(1)

NAN = float("nan")
POOL = {
    "lr": [1e-2, 3e-3, 0.0, -1.0, NAN, float("inf"), "a", True, torch.tensor(1e-2)],
    "betas": [(0.9, 0.999), (0.0, 0.5), [0.8, 0.99], (1.0, 0.9), (None, 0.9), (0.9,), "ab",
              (0.9, NAN)],
    # eps = 0 is valid (as in torch) but 0/0 on a zero gradient: not a finite-result input
    "eps": [1e-8, 1e-12, 1e-3, -1e-8, NAN, None],
    "weight_decay": [0.0, 0.1, -0.1, float("inf"), "x"],
    "bits": [(4, 2), 2, 3, 4, 8, (8, 4), (2, 3), 4.0, True, 5, (4, 2, 1), 16, 32, None],
    "quantizers": [("de", "log"), "de", "linear", ("de", "linear"), ("linear", "de"),
                   ("de-sr", "log"), ("de", "rank1-linear"), ("log", "log"), "fancy", 3, "none",
                   "bf16"],
    "block_size": [128, 64, 8, 12, 100, (128, 256), 2**40, 0, -5, True, 1.5, (64, 64), "8"],
    "quantile": [0.1, 0.5, 0.999, 1.5, 1.01, 2.0, 0.0, 1.0, NAN, "a"],
    "min_quantizable_size": [0, 100, 4097, -1, 1.5],
    "seed": [0, 3, 2**64 - 1, 2**64, -1, "a", 1.5],
    "fused": [None, True, False, "yes", 1],
    "eps_in_s": [True, False, 1, None],
}
DETERMINISTIC = [dict(quantizers=("de", "linear")), dict(quantizers="de", bits=8),
                 dict(quantizers="linear", bits=(3, 4)), dict(quantizers="none", bits=32),
                 dict(quantizers="bf16", bits=16)]
SHAPES = [(), (1,), (5,), (100,), (1000,), (37, 29), (0,)]
REFUSALS = (ValueError, TypeError)


def _draw(rng: random.Random, p_change: float) -> dict:
    return {k: rng.choice(v) for k, v in POOL.items() if rng.random() < p_change}


def _outcome(fn):
    """None if ``fn`` ran, else the exception's type (a refusal) or the exception itself."""
    try:
        fn()
    except REFUSALS as e:
        return type(e)
    except RuntimeError as e:
        if "fused=True" in str(e):
            return RuntimeError
        raise
    return None


def _valid_fused(x) -> bool:
    return x is None or x is True or x is False


def _deterministic(opt, group, p) -> bool:
    return not any(getattr(c, "stochastic", False) for c in opt.codecs(group, p))


def trial(rng: random.Random, stats: dict) -> None:
    cls = rng.choice([solo.AdamW, solo.AdaBelief])
    knobs = _draw(rng, 0.12)
    if rng.random() < 0.4:  # deterministic formats, where fused and reference compare exactly
        for k, v in rng.choice(DETERMINISTIC).items():
            knobs.setdefault(k, v)
    shapes = rng.sample(SHAPES, 3)
    gen = torch.Generator().manual_seed(rng.randrange(2**31))
    params = [torch.randn(s, generator=gen) * 0.1 for s in shapes]
    ref_knobs = {**knobs, "fused": False}
    a_ps = [torch.nn.Parameter(x.clone()) for x in params]
    b_ps = [torch.nn.Parameter(x.clone()) for x in params]
    built = {}
    ra = _outcome(lambda: built.setdefault("a", cls(a_ps[:2], **knobs)))
    rb = _outcome(lambda: built.setdefault("b", cls(b_ps[:2], **ref_knobs)))
    if _valid_fused(knobs.get("fused")):
        assert ra == rb, ("construction", knobs, ra, rb)
    if ra is not None or rb is not None:
        stats["refused"] += 1
        return
    a, b = built["a"], built["b"]
    extra = _draw(rng, 0.15)
    extra.pop("fused", None)
    ra = _outcome(lambda: a.add_param_group({"params": [a_ps[2]], **extra}))
    rb = _outcome(lambda: b.add_param_group({"params": [b_ps[2]], **extra}))
    assert ra == rb, ("add_param_group", knobs, extra, ra, rb)
    for step in range(3):
        if step and rng.random() < 0.4:
            key = rng.choice(list(POOL))
            value = rng.choice(POOL[key])
            gi = rng.randrange(len(a.param_groups))
            a.param_groups[gi][key] = copy.copy(value)
            if key == "fused" and not _valid_fused(value):  # b keeps fused=False
                assert _outcome(a.step) is ValueError, ("fused edit", value)
                stats["refused"] += 1
                return
            if key != "fused":
                b.param_groups[gi][key] = copy.copy(value)
        for pa, pb in zip(a_ps, b_ps):
            g = torch.randn(pa.shape, generator=gen) * 0.01
            pa.grad, pb.grad = g.clone(), g.clone()
        ra, rb = _outcome(a.step), _outcome(b.step)
        if ra is RuntimeError:  # fused=True without a fused step for this format
            stats["refused"] += 1
            return
        assert ra == rb, ("step", step, knobs, extra, ra, rb)
        if ra is not None:
            stats["refused"] += 1
            return
        stats["stepped"] += 1
        for pa, pb in zip(a_ps, b_ps):
            assert torch.isfinite(pa).all() and torch.isfinite(pb).all(), (knobs, extra)
    for group_a, group_b in zip(a.param_groups, b.param_groups):
        for pa, pb in zip(group_a["params"], group_b["params"]):
            if pa in a.state and _deterministic(a, group_a, pa):
                # the fused steps follow the reference op by op; torch's fused AdamW within
                # its own fused-vs-foreach tolerance
                torch.testing.assert_close(pa, pb, msg=lambda m: f"{knobs} {extra}: {m}")
                stats["compared"] += 1


def main(seconds: float, seed: int) -> dict:
    rng = random.Random(seed)
    stats = {"trials": 0, "stepped": 0, "refused": 0, "compared": 0}
    t0 = time.monotonic()
    while time.monotonic() - t0 < seconds or stats["trials"] < 30:
        stats["trials"] += 1
        trial(rng, stats)
    stats["seconds"] = round(time.monotonic() - t0, 2)
    return stats


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    print(json.dumps(main(args.seconds, args.seed)))
