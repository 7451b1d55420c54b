"""Every preset, on every CPU path, updates the same elements whatever the parameter's memory
layout: a channels_last, transposed or strided-view parameter ends each step equal to the
same optimizer stepping a contiguous copy of it (solo/layout.py)."""

import pytest
import torch

import solo
from solo import fused

FUSED = (False, None, True)


def _layouts():
    """name -> (a fresh parameter's values in that layout, the gradient's layout from a
    contiguous one). 6144 elements: several blocks of 128, and above adamw4bit_rank1's fp32
    threshold."""
    g = torch.Generator().manual_seed(0)
    flat, cl4, wide = (torch.randn(s, generator=g) * 0.05
                       for s in [(128, 48), (8, 12, 8, 8), (48, 256)])
    channels_last = lambda t: t.to(memory_format=torch.channels_last)  # noqa: E731
    return {
        "contiguous": (lambda: flat.clone(), lambda t: t),
        "transposed": (lambda: flat.clone().t(), lambda t: t.t().contiguous().t()),
        "channels_last": (lambda: channels_last(cl4), channels_last),
        "channels_last, contiguous grad": (lambda: channels_last(cl4), lambda t: t),
        "strided view": (lambda: wide.clone()[:, 1::2], lambda t: t),
    }


LAYOUTS = _layouts()


def _fused_true_runs(preset, values):
    """Whether ``preset`` has a fused step (fused=True) for a contiguous copy of ``values``."""
    probe = torch.nn.Parameter(values.contiguous())
    probe.grad = torch.zeros_like(probe)
    opt = solo.PRESETS[preset]([probe], fused=True)
    try:
        opt._path(opt.param_groups[0], probe)
    except RuntimeError as e:
        assert "no fused kernel" in str(e), e
        return False
    return True


@pytest.fixture(scope="module", autouse=True)
def built():
    if fused.extension() is None:
        pytest.fail(f"the fused CPU step did not build: {fused.unavailable()}")


def _run(preset, fused_flag, make, grad_layout, steps=3):
    """(parameter, optimizer) after ``steps`` steps from ``make()`` in its layout, and the same
    for a contiguous copy of it, on the same gradients."""
    p = torch.nn.Parameter(make())
    ref = torch.nn.Parameter(make().contiguous())
    kw = dict(lr=1e-2, weight_decay=0.1, seed=3, fused=fused_flag)
    opt, opt_ref = solo.PRESETS[preset]([p], **kw), solo.PRESETS[preset]([ref], **kw)
    g = torch.Generator().manual_seed(1)
    for _ in range(steps):
        grad = torch.randn(ref.shape, generator=g) * 1e-2
        ref.grad, p.grad = grad, grad_layout(grad.clone())
        opt_ref.step()
        opt.step()
    return (p, opt), (ref, opt_ref)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("fused_flag", FUSED)
@pytest.mark.parametrize("preset", solo.PRESETS)
def test_every_preset_and_path_updates_the_same_elements_in_every_layout(preset, fused_flag,
                                                                        layout):
    make, grad_layout = LAYOUTS[layout]
    if fused_flag and not _fused_true_runs(preset, make()):
        # no fused step for this format: refused alike in every layout, naming the parameter
        p = torch.nn.Parameter(make())
        p.grad = grad_layout(torch.zeros(p.shape))
        with pytest.raises(RuntimeError, match=r"no fused kernel for param_groups\[0\]"):
            solo.PRESETS[preset]([p], fused=True).step()
        return
    (p, opt), (ref, opt_ref) = _run(preset, fused_flag, make, grad_layout)
    assert p.stride() == make().stride()  # the parameter kept its layout
    assert (layout == "contiguous") == p.is_contiguous()
    # the same path as for its contiguous copy: a layout never falls back quietly
    assert opt._path(opt.param_groups[0], p) == opt_ref._path(opt_ref.param_groups[0], ref)
    assert not torch.equal(ref, make().contiguous())
    torch.testing.assert_close(p.contiguous(), ref, rtol=0, atol=0)
    for key, t in opt_ref.state[ref].items():
        torch.testing.assert_close(opt.state[p][key], t, rtol=0, atol=0, msg=key)


@pytest.mark.parametrize("fused_flag", FUSED)
@pytest.mark.parametrize("preset", solo.PRESETS)
def test_a_single_gradient_element_moves_only_its_parameter_element(preset, fused_flag):
    """The reproducers: a gradient with one 1 at [0,1,0,0] of a channels_last (2,3,2,2)
    parameter, and at [0,1] of a transposed (3,4).t() one, moves only that element."""
    for shape, layout, at in [((2, 3, 2, 2), torch.channels_last, (0, 1, 0, 0)),
                              ((4, 3), "t", (0, 1))]:
        if layout == "t":
            p = torch.nn.Parameter(torch.zeros(shape[::-1]).t())
            grad = torch.zeros(shape[::-1]).t()
        else:
            p = torch.nn.Parameter(torch.zeros(shape).to(memory_format=layout))
            grad = torch.zeros(shape).to(memory_format=layout)
        grad[at] = 1.0
        p.grad = grad
        flag = None if fused_flag and not _fused_true_runs(preset, p) else fused_flag
        solo.PRESETS[preset]([p], lr=1.0, fused=flag).step()
        moved = [tuple(i) for i in (p != 0).nonzero().tolist()]
        assert moved == [at], (shape, moved)


def test_states_loaded_in_another_layout_step_like_contiguous_ones():
    """A checkpoint whose fp32 state tensors are not contiguous (torch.optim keeps the
    parameter's layout) loads into contiguous states: the fused kernel pairs by memory."""
    values = torch.randn(4, 6, 5, 5)
    runs = []
    for relayout in (False, True):
        p = torch.nn.Parameter(values.clone())
        opt = solo.PRESETS["adamw32"]([p], lr=1e-2)
        g = torch.Generator().manual_seed(0)
        p.grad = torch.randn(p.shape, generator=g)
        opt.step()
        sd = opt.state_dict()
        if relayout:
            st = sd["state"][0]
            for key in ("exp_avg", "exp_avg_sq"):
                st[key] = st[key].to(memory_format=torch.channels_last)
        opt = solo.PRESETS["adamw32"]([p], lr=1e-2)
        opt.load_state_dict(sd)
        p.grad = torch.randn(p.shape, generator=g)
        opt.step()
        runs.append((p.detach().clone(), opt.state[p]["exp_avg"]))
    assert runs[1][1].is_contiguous()
    assert torch.equal(runs[0][0], runs[1][0]) and torch.equal(runs[0][1], runs[1][1])
