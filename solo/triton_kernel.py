"""The Triton kernel of the quantized step (launched by :mod:`solo.triton_step`).

One program updates one block of one tensor: unpack the codes, dequantize m and v, apply the
AdamW/AdaBelief update, take the block max (and for ``log`` the exact p-quantile of the
positive v entries), encode, pack. Every step is the eager reference's (solo/update.py
``step_one``, solo/codecs.py) and the C++ kernel's (solo/csrc/fused_step.cpp ``block_scalar``)
in the same order of float32 operations; the comments name the matching lines there.

Bit-for-bit agreement needs IEEE float32 arithmetic: divisions and square roots are the
correctly rounded ``div_rn``/``sqrt_rn`` (Triton's ``/`` and ``sqrt`` are approximate on
NVIDIA GPUs) and the launcher turns off FMA contraction (``enable_fp_fusion=False``). The
transcendental functions are not taken from a device library (which the interpreter lacks and
whose last bits differ between libraries): the element-wise log is the C++ kernel's
``log_normal`` written out, and the per-block pow/log run in float64 and round once.
"""

import triton
import triton.language as tl

_TINY = tl.constexpr(1.1754943508222875e-38)  # torch.finfo(torch.float32).tiny
# rounded to float32 in the kernel: the C++ kernel's `1.0f / k` (the same floats)
_THIRD, _FIFTH = tl.constexpr(1.0 / 3), tl.constexpr(1.0 / 5)
_SEVENTH, _NINTH = tl.constexpr(1.0 / 7), tl.constexpr(1.0 / 9)


@triton.jit
def _nbytes(n, BITS: tl.constexpr):
    """Bytes of n packed codes (solo/packing.py ``packed_numel``)."""
    if BITS == 3:
        return (n + 7) // 8 * 3
    return (n * BITS + 7) // 8


@triton.jit
def _log_normal(x):
    """fused_step.cpp ``log_normal``: ln x for a normal float32 x > 0 within ~2 ulp, from
    integer ops and float32 mul/add/div only (so every backend computes the same bits)."""
    ix = x.to(tl.uint32, bitcast=True)
    ix = ix + (0x3F800000 - 0x3F3504F3)  # moves the mantissa split point to sqrt(1/2)
    e = (ix >> 23).to(tl.int32) - 127
    mb = (ix & 0x007FFFFF) + 0x3F3504F3
    mm = mb.to(tl.float32, bitcast=True)
    s = tl.math.div_rn(mm - 1.0, mm + 1.0)
    s2 = s * s
    series = 2.0 * s * (1.0 + s2 * (_THIRD + s2 * (_FIFTH + s2 * (_SEVENTH + s2 * _NINTH))))
    fe = e.to(tl.float32)
    return fe * 0.693359375 + (series + fe * -2.12194440e-4)  # ln 2 = hi + lo


@triton.jit
def _uniform(k0, k1, i):
    """fused_step.cpp ``uniform``: 24-bit uniform in [0, 1) of element ``i`` (uint32) under
    the key (k0, k1): murmur3's 32-bit finalizer (Appleby, public domain) of a Weyl sequence."""
    h = (i * 0x9E3779B9 + k0) ^ k1
    h = h ^ (h >> 16)
    h = h * 0x85EBCA6B
    h = h ^ (h >> 13)
    h = h * 0xC2B2AE35
    h = h ^ (h >> 16)
    return (h >> 8).to(tl.float32) * (1.0 / 16777216.0)


@triton.jit
def _unpack(ptr, byte0, nbytes, grp, j, BITS: tl.constexpr):
    """Codes [G, 8] of the block whose packed codes start at byte ``byte0`` (solo/packing.py:
    a group of 8 codes is BITS bytes, codes LSB-first in a little-endian word)."""
    word = tl.zeros(grp.shape, tl.int64)
    for k in tl.static_range(BITS):
        b = byte0 + grp * BITS + k
        word = word | (tl.load(ptr + b, mask=b < nbytes, other=0).to(tl.int64) << (8 * k))
    return ((word >> (j * BITS)) & ((1 << BITS) - 1)).to(tl.int32)


@triton.jit
def _pack(ptr, byte0, nbytes, grp, j, codes, BITS: tl.constexpr):
    """Store codes [G, 8] (0 past the tensor's end: the padding) as packed bytes."""
    word = tl.sum(codes.to(tl.int64) << (j * BITS), axis=1)[:, None]
    for k in tl.static_range(BITS):
        b = byte0 + grp * BITS + k
        tl.store(ptr + b, ((word >> (8 * k)) & 255).to(tl.uint8), mask=b < nbytes)


@triton.jit
def _nearest(u, bounds, BITS: tl.constexpr):
    """Number of the 2^BITS - 1 sorted boundaries below u (torch.bucketize, right=False; the
    C++ ``nearest``): a branch-free binary search, BITS table lookups."""
    c = tl.zeros(u.shape, tl.int32)
    for it in tl.static_range(BITS):
        cand = c + (1 << (BITS - 1 - it))
        c = tl.where(tl.load(bounds + cand - 1) < u, cand, c)
    return c


@triton.jit
def _pow64(x, k, BITS: tl.constexpr):
    """float32(x^k) for float32 x > 0 and integer codes 0 <= k < 2^BITS: binary powering in
    float64 (error ~1e-15) rounded once, i.e. the correctly rounded powf almost always."""
    r = tl.full(k.shape, 1.0, tl.float64)
    sq = x.to(tl.float64)
    for it in tl.static_range(BITS):
        r = tl.where(((k >> it) & 1) != 0, r * sq, r)
        sq = sq * sq
    return r.to(tl.float32)


@triton.jit
def _two_order_stats(x, keep, k, lo, hi, SMALL_Q: tl.constexpr):
    """The lo-th and hi-th smallest (0-based) of the k entries of x where keep. Exact, without
    a sort: each round takes the extreme remaining value and the ranks its copies fill, from
    the bottom (SMALL_Q: hi + 1 rounds at most) or from the top (k - lo rounds), so a small
    quantile of a block costs a few reductions (a bitonic sort of the block costs ~28)."""
    a = tl.zeros((), tl.float32)
    b = tl.zeros((), tl.float32)
    seen = k * 0  # ranks filled so far (from the chosen end)
    if SMALL_Q:
        cur = tl.where(keep, x, float("inf"))
        for _ in range(0, hi + 1):
            ext = tl.min(cur, axis=0)
            cnt = tl.sum((cur == ext).to(tl.int32), axis=0)
            a = tl.where((lo >= seen) & (lo < seen + cnt), ext, a)
            b = tl.where((hi >= seen) & (hi < seen + cnt), ext, b)
            seen += cnt
            cur = tl.where(cur == ext, float("inf"), cur)
    else:
        cur = tl.where(keep, x, -float("inf"))
        for _ in range(0, tl.where(k > 0, k - lo, 0)):  # (k = 0: lo = -1, no rounds)
            ext = tl.max(cur, axis=0)
            cnt = tl.sum((cur == ext).to(tl.int32), axis=0)
            # rank from the bottom of the copies of ext: k - seen - cnt .. k - seen - 1
            a = tl.where((lo >= k - seen - cnt) & (lo < k - seen), ext, a)
            b = tl.where((hi >= k - seen - cnt) & (hi < k - seen), ext, b)
            seen += cnt
            cur = tl.where(cur == ext, -float("inf"), cur)
    return a, b


@triton.jit
def quantized_step_kernel(
    ptrs, floats, keys, first_block, n_tensors,
    m_levels, m_bounds, v_levels, v_bounds,
    decay, w, b2, omb2, eps, beps, quantile, alpha_min, alpha_max, inv_top,
    P_DTYPE: tl.constexpr, G_DTYPE: tl.constexpr, MBITS: tl.constexpr, VBITS: tl.constexpr,
    LOG: tl.constexpr, BELIEF: tl.constexpr, HAS_WD: tl.constexpr, SMALL_W: tl.constexpr,
    HAS_RAND: tl.constexpr, SMALL_Q: tl.constexpr, BLOCK: tl.constexpr,
    BLOCK_P2: tl.constexpr, LOG2_T: tl.constexpr,
):
    """One block of one tensor of a multi-tensor launch.

    ptrs: int64 [T, 9] per tensor: addresses of the param, grad, m codes, m scales, v codes,
    v scales, v alphas, the reference's draws (0 if none), then numel; floats: fp32 [T, 2]
    (-lr / bc1, sqrt(1 - beta2^t)); keys: int64 [T] SR keys; first_block: int64 [T] each
    tensor's first block in the launch. Group scalars as fused_step.cpp's ``Args``.
    """
    pid = tl.program_id(0).to(tl.int64)
    # the tensor of this block: the last t with first_block[t] <= pid
    t = pid * 0
    for it in tl.static_range(LOG2_T):
        cand = t + (1 << (LOG2_T - 1 - it))
        fb = tl.load(first_block + cand, mask=cand < n_tensors, other=pid + 1)
        t = tl.where(fb <= pid, cand, t)
    row = ptrs + t * 9
    n = tl.load(row + 8)
    blk = pid - tl.load(first_block + t)
    start = blk * BLOCK
    length = tl.minimum(n - start, BLOCK)
    p_ptr = tl.load(row + 0).to(tl.pointer_type(P_DTYPE))
    g_ptr = tl.load(row + 1).to(tl.pointer_type(G_DTYPE))
    mc_ptr = tl.load(row + 2).to(tl.pointer_type(tl.uint8))
    ms_ptr = tl.load(row + 3).to(tl.pointer_type(tl.float32))
    vc_ptr = tl.load(row + 4).to(tl.pointer_type(tl.uint8))
    vs_ptr = tl.load(row + 5).to(tl.pointer_type(tl.float32))
    step_size = tl.load(floats + t * 2)
    bc2 = tl.load(floats + t * 2 + 1)

    grp = tl.arange(0, BLOCK_P2 // 8)[:, None]
    j = tl.arange(0, 8)[None, :]
    i = grp * 8 + j  # element of the block; a group of 8 codes starts at a byte
    valid = i < length
    e = start + i  # element of the tensor
    m_bytes0 = start // 8 * MBITS
    v_bytes0 = start // 8 * VBITS
    m_nbytes = _nbytes(n, MBITS)
    v_nbytes = _nbytes(n, VBITS)

    # decode (codecs BlockCodec.decode / LogCodec.decode; C++ unpack_block + table lookup)
    mscale_old = tl.load(ms_ptr + blk)
    vscale_old = tl.load(vs_ptr + blk)
    mcode = _unpack(mc_ptr, m_bytes0, m_nbytes, grp, j, MBITS)
    vcode = _unpack(vc_ptr, v_bytes0, v_nbytes, grp, j, VBITS)
    m = tl.load(m_levels + mcode) * mscale_old
    if LOG:
        va_ptr = tl.load(row + 6).to(tl.pointer_type(tl.float32))
        v = _pow64(tl.load(va_ptr + blk), vcode, VBITS) * vscale_old
    else:
        v = tl.load(v_levels + vcode) * vscale_old
    g = tl.load(g_ptr + e, mask=valid, other=0.0).to(tl.float32)
    p = tl.load(p_ptr + e, mask=valid, other=0.0).to(tl.float32)

    # the update (update.step_one; C++ block_scalar, same order)
    if HAS_WD:
        p = p * decay  # p32.mul_(1 - lr * wd)
    if SMALL_W:  # m.lerp_(g, 1 - beta1), torch's two lerp formulas
        m = m + w * (g - m)
    else:
        m = g - (g - m) * (1.0 - w)
    if BELIEF:  # v.mul_(beta2).addcmul_(d, d, value=1 - beta2) [+ eps_s]
        d = g - m
        v = (v * b2 + omb2 * d * d) + beps
    else:  # v.mul_(beta2).addcmul_(g, g, value=1 - beta2)
        v = v * b2 + omb2 * g * g
    den = tl.math.div_rn(tl.sqrt_rn(v), bc2) + eps  # (v.sqrt() / bc2_sqrt).add_(eps)
    p = p + tl.math.div_rn(step_size * m, den)  # p32.addcdiv_(m, denom, value=-lr / bc1)
    if P_DTYPE == tl.bfloat16:
        # p.copy_(p32): nearest even, as torch's round_to_nearest_even (c10/util/BFloat16.h),
        # in integer ops (the interpreter's own float32 -> bfloat16 conversion differs)
        bits = p.to(tl.uint32, bitcast=True)
        bits = (bits + (0x7FFF + ((bits >> 16) & 1))) >> 16
        tl.store(p_ptr + e, bits.to(tl.uint16).to(tl.bfloat16, bitcast=True), mask=valid)
    else:
        tl.store(p_ptr + e, p, mask=valid)

    # encode m: absmax scale, nearest level (BlockCodec.encode; C++ encode_nearest)
    m = tl.where(valid, m, 0.0)
    v = tl.where(valid, v, 0.0)
    mscale = tl.maximum(tl.max(tl.max(tl.abs(m), axis=1), axis=0), _TINY)
    vscale = tl.maximum(tl.max(tl.max(v, axis=1), axis=0), _TINY)
    mcode = _nearest(tl.math.div_rn(m, mscale), m_bounds, MBITS)
    _pack(mc_ptr, m_bytes0, m_nbytes, grp, j, tl.where(valid, mcode, 0), MBITS)
    tl.store(ms_ptr + blk, mscale)

    if LOG:
        # Exact p-quantile of the positive entries, torch.quantile's linear interpolation
        # (codecs.block_quantile; C++ positive_quantile): the order statistics lo and hi.
        positive = valid & (v > 0)
        k = tl.sum(tl.sum(positive.to(tl.int32), axis=1), axis=0)
        pos = quantile * (k - 1).to(tl.float32)
        lo = tl.minimum(tl.maximum(tl.floor(pos).to(tl.int32), 0), k - 1)
        hi = tl.minimum(lo + 1, k - 1)
        a, b = _two_order_stats(tl.reshape(v, (BLOCK_P2,)),
                                tl.reshape(positive, (BLOCK_P2,)), k, lo, hi, SMALL_Q)
        xp = tl.where(k > 0, a + (pos - lo.to(tl.float32)) * (b - a), 0.0)
        # alpha = clamp((x_p / max)^(1 / (2^b - 1)), alpha_min, 1 - 2^-24) (LogCodec.alphas)
        ratio = tl.maximum(tl.math.div_rn(xp, vscale), 0.0).to(tl.float64)
        safe = tl.where(ratio > 0, ratio, 1.0)  # pow(0, .) = 0 without a log(0)
        root = tl.where(ratio > 0, tl.exp(tl.log(safe) * inv_top), 0.0)
        root = root.to(tl.float32)
        alpha = tl.minimum(tl.maximum(root, alpha_min), alpha_max)
        la = tl.log(alpha.to(tl.float64)).to(tl.float32)
        # t = log(v / max) / log(alpha); code = clamp(floor(t + U), 0, 2^b - 1)
        x = tl.maximum(tl.math.div_rn(v, vscale), _TINY)
        tt = tl.math.div_rn(_log_normal(x), la)
        if HAS_RAND:  # the reference's draws (tests)
            r_ptr = tl.load(row + 7).to(tl.pointer_type(tl.float32))
            r = tl.load(r_ptr + e, mask=valid, other=0.0)
        else:
            key = tl.load(keys + t)
            r = _uniform((key & 0xFFFFFFFF).to(tl.uint32), (key >> 32).to(tl.uint32),
                         e.to(tl.uint32))
        c = tl.minimum(tl.maximum(tl.floor(tt + r), 0.0), (1 << VBITS) - 1.0)
        vcode = c.to(tl.int32)
        tl.store(va_ptr + blk, alpha)
    else:
        vcode = _nearest(tl.math.div_rn(v, vscale), v_bounds, VBITS)
    _pack(vc_ptr, v_bytes0, v_nbytes, grp, j, tl.where(valid, vcode, 0), VBITS)
    tl.store(vs_ptr + blk, vscale)
