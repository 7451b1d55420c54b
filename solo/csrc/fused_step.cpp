// Fused CPU step of solo.AdamW / solo.AdaBelief for block-quantized states (one pass per block:
// decode m and v, update them and the parameter, re-encode). It follows the eager reference
// (solo/optim.py `_update`, solo/codecs.py) operation by operation, in float32 and in the same
// order, so given the same random draws it produces the same codes; see solo/fused.py.
//
// Supported: m = block codec, nearest rounding, signed levels (de / linear); v = block codec,
// nearest, unsigned levels, or the log codec (per-block p-quantile over positive entries, SR in
// the log domain); equal block sizes, a multiple of 8; bits 2, 3, 4, 8.
#include <torch/extension.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <bit>
#include <limits>
#include <vector>

namespace {

constexpr float kTiny = std::numeric_limits<float>::min();

// Packed codes (solo/packing.py): 2/4/8-bit codes LSB-first in bytes, 3-bit codes eight per
// little-endian 24-bit group. Blocks start at a group boundary (block % 8 == 0).
template <int BITS>
inline void unpack_block(const uint8_t* p, uint8_t* codes, int64_t n) {
  if constexpr (BITS == 8) {
    std::copy(p, p + n, codes);
  } else if constexpr (BITS == 3) {
    for (int64_t g = 0; g * 8 < n; ++g) {
      const uint32_t w = p[3 * g] | (uint32_t(p[3 * g + 1]) << 8) | (uint32_t(p[3 * g + 2]) << 16);
      for (int j = 0; j < 8; ++j) codes[g * 8 + j] = (w >> (3 * j)) & 7;
    }
  } else {
    constexpr int per = 8 / BITS;
    constexpr uint8_t mask = (1 << BITS) - 1;
    for (int64_t b = 0; b * per < n; ++b)
      for (int j = 0; j < per; ++j) codes[b * per + j] = (p[b] >> (j * BITS)) & mask;
  }
}

// Pack codes[0..n) into out; codes past n up to the group end must be 0 (padding).
template <int BITS>
inline void pack_block(uint8_t* out, const uint8_t* codes, int64_t n) {
  if constexpr (BITS == 8) {
    std::copy(codes, codes + n, out);
  } else if constexpr (BITS == 3) {
    for (int64_t g = 0; g * 8 < n; ++g) {
      uint32_t w = 0;
      for (int j = 0; j < 8; ++j) w |= uint32_t(codes[g * 8 + j]) << (3 * j);
      out[3 * g] = w & 0xFF;
      out[3 * g + 1] = (w >> 8) & 0xFF;
      out[3 * g + 2] = (w >> 16) & 0xFF;
    }
  } else {
    constexpr int per = 8 / BITS;
    for (int64_t b = 0; b * per < n; ++b) {
      uint8_t w = 0;
      for (int j = 0; j < per; ++j) w |= codes[b * per + j] << (j * BITS);
      out[b] = w;
    }
  }
}

// Number of boundaries < u (torch.bucketize, right=False). A binary search mispredicts about
// every other branch; for up to 15 boundaries a branch-free count is several times faster.
inline uint8_t nearest(float u, const float* bounds, int nb) {
  if (nb <= 15) {
    int c = 0;
    for (int k = 0; k < nb; ++k) c += bounds[k] < u;
    return static_cast<uint8_t>(c);
  }
  int lo = 0, len = nb;
  while (len > 0) {
    const int half = len >> 1;
    const bool less = bounds[lo + half] < u;
    lo = less ? lo + half + 1 : lo;
    len = less ? len - half - 1 : half;
  }
  return static_cast<uint8_t>(lo);
}

// codes[i] = nearest level of x[i] / scale, for a whole block: the count of boundaries below
// runs boundary by boundary over the block (vectorizes); long codebooks search per element.
inline void encode_nearest(const float* x, float scale, const float* bounds, int nb, int64_t len,
                           float* u, int32_t* cnt, uint8_t* codes) {
  for (int64_t i = 0; i < len; ++i) u[i] = x[i] / scale;
  if (nb <= 15) {
    for (int64_t i = 0; i < len; ++i) cnt[i] = 0;
    for (int k = 0; k < nb; ++k) {
      const float b = bounds[k];
      for (int64_t i = 0; i < len; ++i) cnt[i] += b < u[i];
    }
    for (int64_t i = 0; i < len; ++i) codes[i] = static_cast<uint8_t>(cnt[i]);
  } else {
    for (int64_t i = 0; i < len; ++i) codes[i] = nearest(u[i], bounds, nb);
  }
}

// Counter-based uniform in [0, 1) with 24 random bits for element i under a 64-bit key: the
// murmur3 32-bit finalizer (Appleby, public domain) of a Weyl sequence. 32-bit integer ops
// only, so the loop that draws a block's numbers vectorizes.
inline float uniform(uint32_t k0, uint32_t k1, uint32_t i) {
  uint32_t h = (i * 0x9E3779B9u + k0) ^ k1;
  h ^= h >> 16;
  h *= 0x85EBCA6Bu;
  h ^= h >> 13;
  h *= 0xC2B2AE35u;
  h ^= h >> 16;
  return static_cast<float>(h >> 8) * (1.0f / 16777216.0f);
}

// Natural log of a normal float x > 0 without library calls (so loops over it vectorize),
// within ~2 ulp: x = 2^e * mm with mm in [sqrt(1/2), sqrt(2)), ln mm = 2 atanh(s) =
// 2 (s + s^3/3 + ... + s^9/9) with s = (mm - 1) / (mm + 1), |s| <= 0.172 (truncation < 1e-9).
inline float log_normal(float x) {
  uint32_t ix = std::bit_cast<uint32_t>(x);
  ix += 0x3F800000u - 0x3F3504F3u;  // moves the mantissa split point to sqrt(1/2)
  const int32_t e = static_cast<int32_t>(ix >> 23) - 127;
  const uint32_t mb = (ix & 0x007FFFFFu) + 0x3F3504F3u;
  const float mm = std::bit_cast<float>(mb);
  const float s = (mm - 1.0f) / (mm + 1.0f), s2 = s * s;
  const float series = 2.0f * s * (1.0f + s2 * (1.0f / 3 + s2 * (1.0f / 5 + s2 * (1.0f / 7 + s2 * (1.0f / 9)))));
  const float fe = static_cast<float>(e);
  return fe * 0.693359375f + (series + fe * -2.12194440e-4f);  // ln 2 = hi + lo
}

// torch.quantile's linear interpolation over the positive entries of x[0..n) (0 if none).
float positive_quantile(const float* x, int64_t n, double q, std::vector<float>& buf) {
  buf.clear();
  for (int64_t i = 0; i < n; ++i)
    if (x[i] > 0) buf.push_back(x[i]);
  int64_t k = buf.size();
  if (k == 0) return 0.0f;
  float pos = static_cast<float>(q) * static_cast<float>(k - 1);
  int64_t lo = static_cast<int64_t>(std::floor(pos));
  int64_t hi = std::min(lo + 1, k - 1);
  float a, b;
  if (hi < 32) {
    // The hi+1 smallest in a sorted window (small p: most entries fail the first compare).
    float win[32];
    int64_t size = 0;
    for (float x : buf) {
      if (size == hi + 1 && !(x < win[hi])) continue;
      int64_t j = size < hi + 1 ? size++ : hi;
      while (j > 0 && win[j - 1] > x) {
        win[j] = win[j - 1];
        --j;
      }
      win[j] = x;
    }
    a = win[lo];
    b = win[hi];
  } else {
    std::nth_element(buf.begin(), buf.begin() + lo, buf.end());
    a = buf[lo];
    b = hi == lo ? a : *std::min_element(buf.begin() + lo + 1, buf.end());
  }
  return a + (pos - static_cast<float>(lo)) * (b - a);
}

}  // namespace

struct Args {
  float* P; const float* G; uint8_t* MC; float* MS; const float* ML; const float* MB; int mnb;
  uint8_t* VC; float* VS; float* VA; const float* VL; const float* VB; int vnb;
  const float* R; uint64_t key; int64_t n, block; double quantile, weight_decay; bool belief;
  float decay, w, b2, omb2, epsf, bc2, step;
};

template <int MBITS, int VBITS, bool LOG>
void run_blocks(const Args& a, int64_t b0, int64_t b1) {
  constexpr int vtop = (1 << VBITS) - 1;
  const float vtopf = static_cast<float>(vtop);
  const float inv_top = static_cast<float>(1.0 / vtop);
  const float amin = static_cast<float>(std::pow(static_cast<double>(kTiny), 1.0 / vtop));
  const float amax = 1.0f - std::ldexp(1.0f, -24);
  const int64_t B = a.block;
  std::vector<float> m(B), v(B), u(B), buf;
  std::vector<int32_t> cnt(B);
  std::vector<uint8_t> mc(B + 8, 0), vc(B + 8, 0);
  buf.reserve(B);
  for (int64_t blk = b0; blk < b1; ++blk) {
    const int64_t start = blk * B;
    const int64_t len = std::min(B, a.n - start);
    const int64_t padded = (len + 7) / 8 * 8;
    unpack_block<MBITS>(a.MC + start * MBITS / 8, mc.data(), len);
    unpack_block<VBITS>(a.VC + start * VBITS / 8, vc.data(), len);
    const float ms = a.MS[blk], vs = a.VS[blk];
    float vtab[1 << VBITS];
    for (int k = 0; k <= vtop; ++k)
      vtab[k] = LOG ? std::pow(a.VA[blk], static_cast<float>(k)) * vs : a.VL[k] * vs;
    // Split loops: table lookups (gathers) apart from the arithmetic, so the latter vectorizes.
    for (int64_t i = 0; i < len; ++i) {
      m[i] = a.ML[mc[i]] * ms;
      v[i] = vtab[vc[i]];
    }
    float* P = a.P + start;
    const float* G = a.G + start;
    if (a.weight_decay != 0)
      for (int64_t i = 0; i < len; ++i) P[i] = P[i] * a.decay;
    const float w = a.w, omw = 1.0f - a.w, b2 = a.b2, omb2 = a.omb2, epsf = a.epsf,
                bc2 = a.bc2, stepf = a.step;
    if (std::abs(w) < 0.5f) {
      for (int64_t i = 0; i < len; ++i) m[i] = m[i] + w * (G[i] - m[i]);
    } else {
      for (int64_t i = 0; i < len; ++i) m[i] = G[i] - (G[i] - m[i]) * omw;
    }
    if (a.belief) {
      for (int64_t i = 0; i < len; ++i) {
        const float d = G[i] - m[i];
        v[i] = (v[i] * b2 + omb2 * d * d) + epsf;
      }
    } else {
      for (int64_t i = 0; i < len; ++i) v[i] = v[i] * b2 + omb2 * G[i] * G[i];
    }
    for (int64_t i = 0; i < len; ++i) P[i] = P[i] + stepf * m[i] / (std::sqrt(v[i]) / bc2 + epsf);
    float mabs = 0.0f, vmax = 0.0f;
    for (int64_t i = 0; i < len; ++i) {
      mabs = std::max(mabs, std::abs(m[i]));
      vmax = std::max(vmax, v[i]);
    }
    const float mscale = std::max(mabs, kTiny);
    encode_nearest(m.data(), mscale, a.MB, a.mnb, len, u.data(), cnt.data(), mc.data());
    std::fill(mc.begin() + len, mc.begin() + padded, 0);
    pack_block<MBITS>(a.MC + start * MBITS / 8, mc.data(), len);
    a.MS[blk] = mscale;
    const float vscale = std::max(vmax, kTiny);
    if constexpr (LOG) {
      const float xp = positive_quantile(v.data(), len, a.quantile, buf);
      const float ratio = std::max(xp / vscale, 0.0f);
      const float alpha = std::min(std::max(std::pow(ratio, inv_top), amin), amax);
      const float la = std::log(alpha);
      float* r = u.data();  // the block's uniforms, then its codes as floats
      if (a.R) {
        std::copy(a.R + start, a.R + start + len, r);
      } else {
        const uint32_t k0 = static_cast<uint32_t>(a.key), k1 = static_cast<uint32_t>(a.key >> 32);
        const uint32_t i0 = static_cast<uint32_t>(start);
        for (int64_t i = 0; i < len; ++i) r[i] = uniform(k0, k1, i0 + static_cast<uint32_t>(i));
      }
      // x / max below the smallest normal float (zeros, e.g. embedding rows never updated)
      // has t > 2^b - 1 for every alpha >= alpha_min, like t = +inf: the top code either way.
      for (int64_t i = 0; i < len; ++i) {  // m: scratch
        const float x = v[i] / vscale;
        m[i] = log_normal(x < kTiny ? kTiny : x) / la;
      }
      for (int64_t i = 0; i < len; ++i) {
        const float c = std::floor(m[i] + r[i]);
        r[i] = c < 0.0f ? 0.0f : (c > vtopf ? vtopf : c);
      }
      for (int64_t i = 0; i < len; ++i) vc[i] = static_cast<uint8_t>(r[i]);
      a.VA[blk] = alpha;
    } else {
      encode_nearest(v.data(), vscale, a.VB, a.vnb, len, u.data(), cnt.data(), vc.data());
    }
    std::fill(vc.begin() + len, vc.begin() + padded, 0);
    pack_block<VBITS>(a.VC + start * VBITS / 8, vc.data(), len);
    a.VS[blk] = vscale;
  }
}

template <int MBITS, int VBITS>
void dispatch_log(const Args& a, bool log, int64_t b0, int64_t b1) {
  if (log) run_blocks<MBITS, VBITS, true>(a, b0, b1);
  else run_blocks<MBITS, VBITS, false>(a, b0, b1);
}

template <int MBITS>
void dispatch_v(const Args& a, int vbits, bool log, int64_t b0, int64_t b1) {
  switch (vbits) {
    case 2: return dispatch_log<MBITS, 2>(a, log, b0, b1);
    case 3: return dispatch_log<MBITS, 3>(a, log, b0, b1);
    case 4: return dispatch_log<MBITS, 4>(a, log, b0, b1);
    default: return dispatch_log<MBITS, 8>(a, log, b0, b1);
  }
}

// One step for one parameter. Tensors are contiguous CPU; p, g float32 of n elements.
// m: codes/scales + levels/bounds (signed); v: codes/scales (+ alphas for log) + levels/bounds.
// rand: float32 of n (the reference's draws) or empty (then uniform(key, i)).
void fused_step(torch::Tensor p, torch::Tensor g, torch::Tensor m_codes, torch::Tensor m_scales,
                torch::Tensor m_levels, torch::Tensor m_bounds, int64_t m_bits,
                torch::Tensor v_codes, torch::Tensor v_scales, torch::Tensor v_alphas,
                torch::Tensor v_levels, torch::Tensor v_bounds, int64_t v_bits, bool v_log,
                int64_t block, double quantile, double lr, double beta1, double beta2,
                double eps, double weight_decay, double bc1, double bc2_sqrt, bool belief,
                torch::Tensor rand, int64_t key) {
  Args a;
  a.n = p.numel();
  a.block = block;
  a.P = p.data_ptr<float>();
  a.G = g.data_ptr<float>();
  a.MC = m_codes.data_ptr<uint8_t>();
  a.MS = m_scales.data_ptr<float>();
  a.ML = m_levels.data_ptr<float>();
  a.MB = m_bounds.data_ptr<float>();
  a.mnb = m_bounds.numel();
  a.VC = v_codes.data_ptr<uint8_t>();
  a.VS = v_scales.data_ptr<float>();
  a.VA = v_log ? v_alphas.data_ptr<float>() : nullptr;
  a.VL = v_log ? nullptr : v_levels.data_ptr<float>();
  a.VB = v_log ? nullptr : v_bounds.data_ptr<float>();
  a.vnb = v_log ? 0 : v_bounds.numel();
  a.R = rand.numel() ? rand.data_ptr<float>() : nullptr;
  a.key = static_cast<uint64_t>(key);
  a.quantile = quantile;
  a.weight_decay = weight_decay;
  a.belief = belief;
  // Python scalars become float32 in the reference's tensor ops.
  a.decay = static_cast<float>(1.0 - lr * weight_decay);
  a.w = static_cast<float>(1.0 - beta1);
  a.b2 = static_cast<float>(beta2);
  a.omb2 = static_cast<float>(1.0 - beta2);
  a.epsf = static_cast<float>(eps);
  a.bc2 = static_cast<float>(bc2_sqrt);
  a.step = static_cast<float>(-lr / bc1);
  const int64_t nblocks = (a.n + block - 1) / block;
  const int vb = static_cast<int>(v_bits);
  at::parallel_for(0, nblocks, 16, [&](int64_t b0, int64_t b1) {
    switch (m_bits) {
      case 2: return dispatch_v<2>(a, vb, v_log, b0, b1);
      case 3: return dispatch_v<3>(a, vb, v_log, b0, b1);
      case 4: return dispatch_v<4>(a, vb, v_log, b0, b1);
      default: return dispatch_v<8>(a, vb, v_log, b0, b1);
    }
  });
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("fused_step", &fused_step, "fused block-quantized AdamW/AdaBelief step (CPU)");
}
