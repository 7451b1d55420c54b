"""Inputs that used to crash the interpreter, run in a child process by
test_crash_probes.py so that a signal death fails that test instead of killing pytest.

``python crash_probes.py`` prints one JSON object: probe name -> "ok" or "<ExcType>: <message>".
"""

import json
import sys

import torch

import solo
from solo import fused

torch.set_num_threads(1)


def _outcome(fn) -> str:
    try:
        fn()
    except Exception as e:  # the probes record what was raised; a crash never gets here
        return f"{type(e).__name__}: {e}"
    return "ok"


def _stepped(n=100_000, **kw):
    p = torch.nn.Parameter(torch.randn(n))
    o = solo.presets.solo_4_2bit([p], **kw)
    p.grad = torch.randn(n)
    o.step()
    return p, o


def _group_probe(fused_flag, quantile):
    def run():
        p = torch.nn.Parameter(torch.randn(300))
        o = solo.presets.solo_4_2bit([{"params": [p], "quantile": quantile}], fused=fused_flag)
        p.grad = torch.randn(300)
        o.step()
    return run


def _edit_probe(fused_flag, key, value):
    def run():
        p, o = _stepped(fused=fused_flag)
        o.param_groups[0][key] = value
        o.step()
    return run


def _kernel_args():
    """Valid arguments of the C++ entry for a stepped 1000-element solo_4_2bit parameter."""
    p, o = _stepped(n=1000, fused=True)
    group = o.param_groups[0]
    cm, cv = o.codecs(group, p)
    st = o.state[p]
    ml, mb = cm._tables(p.device)
    m_lut, m_bpad = fused._search_table(cm)
    return dict(p=p.detach(), g=p.grad, m_codes=st["exp_avg_codes"],
                m_scales=st["exp_avg_scales"], m_levels=ml, m_bounds=mb, m_bits=4,
                v_codes=st["exp_avg_sq_codes"], v_scales=st["exp_avg_sq_scales"],
                v_alphas=st["exp_avg_sq_alphas"], v_levels=torch.empty(0),
                v_bounds=torch.empty(0), v_bits=2, v_log=True, block=128, quantile=0.1,
                lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.0, bc1=0.1,
                bc2_sqrt=0.1, belief=False, belief_eps=0.0, rand=torch.empty(0), key=1,
                m_lut=m_lut, m_bpad=m_bpad, v_lut=torch.empty(0, dtype=torch.int32),
                v_bpad=torch.empty(0))


def _kernel_probe(**change):
    def run():
        args = _kernel_args()
        args.update({k: (v(args) if callable(v) else v) for k, v in change.items()})
        fused.extension().fused_step(*args.values())
    return run


def _lut_args(**change):
    """An 8-bit codebook (adamw8bit) so that the bucket tables are in use."""
    def run():
        p = torch.nn.Parameter(torch.randn(1000))
        o = solo.presets.adamw8bit([p], fused=True)
        p.grad = torch.randn(1000)
        o.step()
        group = o.param_groups[0]
        cm, cv = o.codecs(group, p)
        st = o.state[p]
        (ml, mb), (vl, vb) = cm._tables(p.device), cv._tables(p.device)
        (m_lut, m_bpad), (v_lut, v_bpad) = fused._search_table(cm), fused._search_table(cv)
        args = dict(p=p.detach(), g=p.grad, m_codes=st["exp_avg_codes"],
                    m_scales=st["exp_avg_scales"], m_levels=ml, m_bounds=mb, m_bits=8,
                    v_codes=st["exp_avg_sq_codes"], v_scales=st["exp_avg_sq_scales"],
                    v_alphas=torch.empty(0), v_levels=vl, v_bounds=vb, v_bits=8, v_log=False,
                    block=128, quantile=0.0, lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8,
                    weight_decay=0.0, bc1=0.1, bc2_sqrt=0.1, belief=False, belief_eps=0.0,
                    rand=torch.empty(0), key=0, m_lut=m_lut, m_bpad=m_bpad, v_lut=v_lut,
                    v_bpad=v_bpad)
        args.update({k: (v(args) if callable(v) else v) for k, v in change.items()})
        fused.extension().fused_step(*args.values())
    return run


def _resized():
    p, o = _stepped(n=1000, fused=True)
    p.data = torch.randn(2000)
    p.grad = torch.randn(2000)
    o.step()


def _codes_as_float():
    p, o = _stepped(n=1000, fused=True)
    o.state[p]["exp_avg_codes"] = o.state[p]["exp_avg_codes"].float()
    o.step()


PROBES = {"parameter resized under its states": _resized,
          "state codes edited to float": _codes_as_float}
for flag in (None, False):
    for q in (1.5, 1.01, 2.0, float("nan")):
        PROBES[f"group quantile={q} fused={flag}"] = _group_probe(flag, q)
    PROBES[f"edit quantile=1.5 fused={flag}"] = _edit_probe(flag, "quantile", 1.5)
    PROBES[f"edit block_size=(64, 64) fused={flag}"] = _edit_probe(flag, "block_size", (64, 64))
    PROBES[f"edit bits=(8, 4) fused={flag}"] = _edit_probe(flag, "bits", (8, 4))
    PROBES[f"block_size=2**31-1 fused={flag}"] = lambda flag=flag: _stepped(
        n=1000, block_size=2**31 - 1, fused=flag)
PROBES.update({
    "kernel valid": _kernel_probe(),
    "kernel m_scales short": _kernel_probe(m_scales=lambda a: a["m_scales"][:3]),
    "kernel v_alphas short": _kernel_probe(v_alphas=lambda a: a["v_alphas"][:3]),
    "kernel m_codes short": _kernel_probe(m_codes=lambda a: a["m_codes"][:10]),
    "kernel v_codes int32": _kernel_probe(v_codes=lambda a: a["v_codes"].int()),
    "kernel p float64": _kernel_probe(p=lambda a: a["p"].double()),
    "kernel p strided": _kernel_probe(p=lambda a: torch.zeros(2000)[::2]),
    "kernel grad short": _kernel_probe(g=lambda a: a["g"][:10]),
    "kernel m_bits=5": _kernel_probe(m_bits=5),
    "kernel v_bits=8 (tables of 2)": _kernel_probe(v_bits=8),
    "kernel block=0": _kernel_probe(block=0),
    "kernel block=-128": _kernel_probe(block=-128),
    "kernel block=12": _kernel_probe(block=12),
    "kernel block=64 (scales of 128)": _kernel_probe(block=64),
    "kernel quantile=1.5": _kernel_probe(quantile=1.5),
    "kernel quantile=nan": _kernel_probe(quantile=float("nan")),
    "kernel m_levels short": _kernel_probe(m_levels=lambda a: a["m_levels"][:4]),
    "kernel rand short": _kernel_probe(rand=torch.rand(10)),
    "kernel lut valid": _lut_args(),
    "kernel lut out of range": _lut_args(m_lut=lambda a: a["m_lut"] + 10_000),
    "kernel lut wrong size": _lut_args(v_lut=lambda a: a["v_lut"][:100]),
})

if __name__ == "__main__":
    names = sys.argv[1:] or list(PROBES)
    print(json.dumps({name: _outcome(PROBES[name]) for name in names}))
