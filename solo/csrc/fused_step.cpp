// Fused CPU step of solo.AdamW / solo.AdaBelief for block-quantized states (one pass per block:
// decode m and v, update them and the parameter, re-encode). It follows the eager reference
// (solo/update.py `step_one`, solo/codecs.py) operation by operation, in float32 and in the same
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
#include <cstring>
#include <vector>

#if defined(__AVX2__)
#include <immintrin.h>
#define SOLO_AVX2 1
#endif

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

// Position q (k - 1) of torch.quantile's linear interpolation over k sorted entries, and the
// two ranks around it.
inline float quantile_pos(double q, int64_t k, int64_t& lo, int64_t& hi) {
  const float pos = static_cast<float>(q) * static_cast<float>(k - 1);
  // float(k - 1) may round above k - 1 once k > 2^24: the ranks stay inside [0, k)
  lo = std::min(std::max(static_cast<int64_t>(std::floor(pos)), int64_t(0)), k - 1);
  hi = std::min(lo + 1, k - 1);
  return pos;
}

inline float interpolate(float a, float b, float pos, int64_t lo) {
  return a + (pos - static_cast<float>(lo)) * (b - a);
}

// The lo-th and hi-th smallest (0-based, lo <= hi < n) of x[0..n); reorders x.
void select_two(float* x, int64_t n, int64_t lo, int64_t hi, float& a, float& b) {
  if (hi < 32) {
    // The hi+1 smallest in a sorted window (small p: most entries fail the first compare).
    float win[32];
    int64_t size = 0;
    for (int64_t i = 0; i < n; ++i) {
      const float y = x[i];
      if (size == hi + 1 && !(y < win[hi])) continue;
      int64_t j = size < hi + 1 ? size++ : hi;
      while (j > 0 && win[j - 1] > y) {
        win[j] = win[j - 1];
        --j;
      }
      win[j] = y;
    }
    a = win[lo];
    b = win[hi];
  } else {
    std::nth_element(x, x + lo, x + n);
    a = x[lo];
    b = hi == lo ? a : *std::min_element(x + lo + 1, x + n);
  }
}

// torch.quantile's linear interpolation over the positive entries of x[0..n) (0 if none).
float positive_quantile(const float* x, int64_t n, double q, std::vector<float>& buf) {
  buf.clear();
  for (int64_t i = 0; i < n; ++i)
    if (x[i] > 0) buf.push_back(x[i]);
  const int64_t k = buf.size();
  if (k == 0) return 0.0f;
  int64_t lo, hi;
  const float pos = quantile_pos(q, k, lo, hi);
  float a, b;
  select_two(buf.data(), k, lo, hi, a, b);
  return interpolate(a, b, pos, lo);
}

}  // namespace

// Bucket table for nearest-level search over 255 boundaries (solo/fused.py `_search_table`):
// for |u| <= 1, key = (bits of |u|) >> 16 (a binade in 128 buckets), plus kLutKeys when u < 0;
// lut[key] = number of boundaries below the bucket, and at most `depth` boundaries fall inside
// a bucket, so the count below u is lut[key] + #{j < depth: bpad[lut[key] + j] < u}
// (bpad = the boundaries followed by `depth` +inf).
constexpr int kLutShift = 16;
constexpr int32_t kLutKeys = (0x3F800000 >> kLutShift) + 1;

struct Search {
  const float* bounds = nullptr; int nb = 0;
  const int32_t* lut = nullptr; const float* bpad = nullptr; int depth = 0;
};

struct Args {
  float* P; const float* G; uint8_t* MC; float* MS; const float* ML; const float* MB; int mnb;
  uint8_t* VC; float* VS; float* VA; const float* VL; const float* VB; int vnb;
  Search ms, vs;
  const float* R; uint64_t key; int64_t n, block; double quantile, weight_decay; bool belief;
  float decay, w, b2, omb2, epsf, beps, bc2, step;
};

// Per-thread scratch for one block.
struct Scratch {
  std::vector<float> m, v, u, buf;
  std::vector<int32_t> cnt;
  std::vector<uint8_t> mc, vc;
  explicit Scratch(int64_t B) : m(B), v(B), u(B), cnt(B), mc(B + 8, 0), vc(B + 8, 0) {
    buf.reserve(B);
  }
};

// Levels of the log codec for one block: alpha^k * scale (as the reference's pow, then product).
template <int VBITS>
inline void log_table(float alpha, float scale, float* tab) {
  for (int k = 0; k < (1 << VBITS); ++k) tab[k] = std::pow(alpha, static_cast<float>(k)) * scale;
}

struct LogConsts {
  float vtopf, inv_top, amin, amax;
  explicit LogConsts(int vbits) {
    const int vtop = (1 << vbits) - 1;
    vtopf = static_cast<float>(vtop);
    inv_top = static_cast<float>(1.0 / vtop);
    amin = static_cast<float>(std::pow(static_cast<double>(kTiny), 1.0 / vtop));
    amax = 1.0f - std::ldexp(1.0f, -24);
  }
  // alpha = clamp((x_p / max)^(1 / (2^b - 1)), alpha_min, 1 - 2^-24) (codecs.LogCodec.alphas)
  float alpha(float xp, float vscale) const {
    const float ratio = std::max(xp / vscale, 0.0f);
    return std::min(std::max(std::pow(ratio, inv_top), amin), amax);
  }
};

// The reference, one block at a time, loop by loop (any length, any supported format).
template <int MBITS, int VBITS, bool LOG>
void block_scalar(const Args& a, int64_t blk, Scratch& s, const LogConsts& lc) {
  const int64_t B = a.block;
  float* m = s.m.data();
  float* v = s.v.data();
  const int64_t start = blk * B;
  const int64_t len = std::min(B, a.n - start);
  const int64_t padded = (len + 7) / 8 * 8;
  unpack_block<MBITS>(a.MC + start * MBITS / 8, s.mc.data(), len);
  unpack_block<VBITS>(a.VC + start * VBITS / 8, s.vc.data(), len);
  const float ms = a.MS[blk], vs = a.VS[blk];
  float vtab[1 << VBITS];
  if constexpr (LOG) {
    log_table<VBITS>(a.VA[blk], vs, vtab);
  } else {
    for (int k = 0; k < (1 << VBITS); ++k) vtab[k] = a.VL[k] * vs;
  }
  // Split loops: table lookups (gathers) apart from the arithmetic, so the latter vectorizes.
  for (int64_t i = 0; i < len; ++i) {
    m[i] = a.ML[s.mc[i]] * ms;
    v[i] = vtab[s.vc[i]];
  }
  float* P = a.P + start;
  const float* G = a.G + start;
  if (a.weight_decay != 0)
    for (int64_t i = 0; i < len; ++i) P[i] = P[i] * a.decay;
  const float w = a.w, omw = 1.0f - a.w, b2 = a.b2, omb2 = a.omb2, epsf = a.epsf,
              beps = a.beps, bc2 = a.bc2, stepf = a.step;
  if (std::abs(w) < 0.5f) {
    for (int64_t i = 0; i < len; ++i) m[i] = m[i] + w * (G[i] - m[i]);
  } else {
    for (int64_t i = 0; i < len; ++i) m[i] = G[i] - (G[i] - m[i]) * omw;
  }
  if (a.belief) {
    for (int64_t i = 0; i < len; ++i) {
      const float d = G[i] - m[i];
      v[i] = (v[i] * b2 + omb2 * d * d) + beps;
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
  encode_nearest(m, mscale, a.MB, a.mnb, len, s.u.data(), s.cnt.data(), s.mc.data());
  std::fill(s.mc.begin() + len, s.mc.begin() + padded, 0);
  pack_block<MBITS>(a.MC + start * MBITS / 8, s.mc.data(), len);
  a.MS[blk] = mscale;
  const float vscale = std::max(vmax, kTiny);
  if constexpr (LOG) {
    const float alpha = lc.alpha(positive_quantile(v, len, a.quantile, s.buf), vscale);
    const float la = std::log(alpha);
    float* r = s.u.data();  // the block's uniforms, then its codes as floats
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
      r[i] = c < 0.0f ? 0.0f : (c > lc.vtopf ? lc.vtopf : c);
    }
    for (int64_t i = 0; i < len; ++i) s.vc[i] = static_cast<uint8_t>(r[i]);
    a.VA[blk] = alpha;
  } else {
    encode_nearest(v, vscale, a.VB, a.vnb, len, s.u.data(), s.cnt.data(), s.vc.data());
  }
  std::fill(s.vc.begin() + len, s.vc.begin() + padded, 0);
  pack_block<VBITS>(a.VC + start * VBITS / 8, s.vc.data(), len);
  a.VS[blk] = vscale;
}

#ifdef SOLO_AVX2
// The same block, eight elements per instruction (AVX2; blocks whose length is a multiple of
// 8). Every float operation is the scalar one in the same order (no FMA), so both write the
// same bits; tests/solo/test_fused.py checks that. Codes stay in registers between unpacking,
// the table lookup and the update, and between the boundary count and packing.
template <int BITS>
inline __m256i load_codes(const uint8_t* p) {  // 8 codes from a group boundary
  if constexpr (BITS == 8) {
    return _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p)));
  } else {
    uint32_t w = 0;
    std::memcpy(&w, p, BITS);  // 8 codes of BITS bits = BITS bytes, little-endian
    const __m256i sh = _mm256_setr_epi32(0, BITS, 2 * BITS, 3 * BITS, 4 * BITS, 5 * BITS,
                                         6 * BITS, 7 * BITS);
    return _mm256_and_si256(_mm256_srlv_epi32(_mm256_set1_epi32(static_cast<int>(w)), sh),
                            _mm256_set1_epi32((1 << BITS) - 1));
  }
}

template <int BITS>
inline void store_codes(uint8_t* p, __m256i c) {
  if constexpr (BITS == 8) {
    const __m128i w16 = _mm_packus_epi32(_mm256_castsi256_si128(c), _mm256_extracti128_si256(c, 1));
    _mm_storel_epi64(reinterpret_cast<__m128i*>(p), _mm_packus_epi16(w16, w16));
  } else {
    const __m256i sh = _mm256_setr_epi32(0, BITS, 2 * BITS, 3 * BITS, 4 * BITS, 5 * BITS,
                                         6 * BITS, 7 * BITS);
    const __m256i x = _mm256_sllv_epi32(c, sh);
    __m128i y = _mm_or_si128(_mm256_castsi256_si128(x), _mm256_extracti128_si256(x, 1));
    y = _mm_or_si128(y, _mm_shuffle_epi32(y, 0x4E));
    y = _mm_or_si128(y, _mm_shuffle_epi32(y, 0xB1));
    const uint32_t w = static_cast<uint32_t>(_mm_cvtsi128_si32(y));
    std::memcpy(p, &w, BITS);
  }
}

// tab[idx] for a table of 2^BITS floats (padded to at least 8).
template <int BITS>
inline __m256 lookup(const float* tab, __m256i idx) {
  if constexpr (BITS <= 3) {
    return _mm256_permutevar8x32_ps(_mm256_loadu_ps(tab), idx);
  } else if constexpr (BITS == 4) {
    const __m256 lo = _mm256_permutevar8x32_ps(_mm256_loadu_ps(tab), idx);
    const __m256 hi = _mm256_permutevar8x32_ps(_mm256_loadu_ps(tab + 8), idx);
    return _mm256_blendv_ps(lo, hi, _mm256_castsi256_ps(_mm256_cmpgt_epi32(idx, _mm256_set1_epi32(7))));
  } else {
    return _mm256_i32gather_ps(tab, idx, 4);
  }
}

// Count of boundaries below u (2^BITS - 1 sorted boundaries): compares against each one for
// up to 15; for 255, the bucket table (two gathers when depth is 1) or else a branch-free
// binary search over gathered boundaries.
template <int BITS>
inline __m256i count_below(__m256 u, const Search& sr) {
  if constexpr (BITS <= 4) {
    __m256i c = _mm256_setzero_si256();
    for (int k = 0; k < (1 << BITS) - 1; ++k)
      c = _mm256_sub_epi32(c, _mm256_castps_si256(
                                  _mm256_cmp_ps(_mm256_set1_ps(sr.bounds[k]), u, _CMP_LT_OQ)));
    return c;
  } else {
    if (sr.lut) {
      const __m256i bits = _mm256_castps_si256(u);
      __m256i key = _mm256_min_epu32(
          _mm256_srli_epi32(_mm256_and_si256(bits, _mm256_set1_epi32(0x7FFFFFFF)), kLutShift),
          _mm256_set1_epi32(kLutKeys - 1));
      key = _mm256_add_epi32(key, _mm256_and_si256(_mm256_srai_epi32(bits, 31),
                                                   _mm256_set1_epi32(kLutKeys)));
      const __m256i base = _mm256_i32gather_epi32(sr.lut, key, 4);
      __m256i c = base;
      for (int j = 0; j < sr.depth; ++j) {
        const __m256 t = _mm256_i32gather_ps(sr.bpad, _mm256_add_epi32(base, _mm256_set1_epi32(j)), 4);
        c = _mm256_sub_epi32(c, _mm256_castps_si256(_mm256_cmp_ps(t, u, _CMP_LT_OQ)));
      }
      return c;
    }
    __m256i idx = _mm256_setzero_si256();
    for (int step = 1 << (BITS - 1); step; step >>= 1) {
      const __m256 t = _mm256_i32gather_ps(
          sr.bounds, _mm256_add_epi32(idx, _mm256_set1_epi32(step - 1)), 4);
      const __m256i less = _mm256_castps_si256(_mm256_cmp_ps(t, u, _CMP_LT_OQ));
      idx = _mm256_add_epi32(idx, _mm256_and_si256(less, _mm256_set1_epi32(step)));
    }
    return idx;
  }
}

inline float hmax(__m256 x) {
  __m128 y = _mm_max_ps(_mm256_castps256_ps128(x), _mm256_extractf128_ps(x, 1));
  y = _mm_max_ps(y, _mm_movehl_ps(y, y));
  y = _mm_max_ss(y, _mm_shuffle_ps(y, y, 1));
  return _mm_cvtss_f32(y);
}

inline int64_t hsum(__m256i x) {
  alignas(32) int32_t t[8];
  _mm256_store_si256(reinterpret_cast<__m256i*>(t), x);
  int64_t s = 0;
  for (int j = 0; j < 8; ++j) s += t[j];
  return s;
}

inline __m256 uniform8(uint32_t k0, uint32_t k1, uint32_t i0) {
  __m256i h = _mm256_add_epi32(_mm256_set1_epi32(static_cast<int>(i0)),
                               _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
  h = _mm256_mullo_epi32(h, _mm256_set1_epi32(static_cast<int>(0x9E3779B9u)));
  h = _mm256_xor_si256(_mm256_add_epi32(h, _mm256_set1_epi32(static_cast<int>(k0))),
                       _mm256_set1_epi32(static_cast<int>(k1)));
  h = _mm256_xor_si256(h, _mm256_srli_epi32(h, 16));
  h = _mm256_mullo_epi32(h, _mm256_set1_epi32(static_cast<int>(0x85EBCA6Bu)));
  h = _mm256_xor_si256(h, _mm256_srli_epi32(h, 13));
  h = _mm256_mullo_epi32(h, _mm256_set1_epi32(static_cast<int>(0xC2B2AE35u)));
  h = _mm256_xor_si256(h, _mm256_srli_epi32(h, 16));
  return _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_srli_epi32(h, 8)),
                       _mm256_set1_ps(1.0f / 16777216.0f));
}

inline __m256 log_normal8(__m256 x) {
  const __m256i ix = _mm256_add_epi32(_mm256_castps_si256(x),
                                      _mm256_set1_epi32(0x3F800000 - 0x3F3504F3));
  const __m256i e = _mm256_sub_epi32(_mm256_srli_epi32(ix, 23), _mm256_set1_epi32(127));
  const __m256 mm = _mm256_castsi256_ps(_mm256_add_epi32(
      _mm256_and_si256(ix, _mm256_set1_epi32(0x007FFFFF)), _mm256_set1_epi32(0x3F3504F3)));
  const __m256 one = _mm256_set1_ps(1.0f);
  const __m256 s = _mm256_div_ps(_mm256_sub_ps(mm, one), _mm256_add_ps(mm, one));
  const __m256 s2 = _mm256_mul_ps(s, s);
  __m256 t = _mm256_mul_ps(s2, _mm256_set1_ps(1.0f / 9));
  t = _mm256_mul_ps(s2, _mm256_add_ps(_mm256_set1_ps(1.0f / 7), t));
  t = _mm256_mul_ps(s2, _mm256_add_ps(_mm256_set1_ps(1.0f / 5), t));
  t = _mm256_mul_ps(s2, _mm256_add_ps(_mm256_set1_ps(1.0f / 3), t));
  const __m256 series = _mm256_mul_ps(_mm256_mul_ps(_mm256_set1_ps(2.0f), s),
                                      _mm256_add_ps(one, t));
  const __m256 fe = _mm256_cvtepi32_ps(e);
  return _mm256_add_ps(_mm256_mul_ps(fe, _mm256_set1_ps(0.693359375f)),
                       _mm256_add_ps(series, _mm256_mul_ps(fe, _mm256_set1_ps(-2.12194440e-4f))));
}

// Left-pack of the entries of x[0..n) in (0, T] into out (n a multiple of 8; out has room for
// n + 8): per 8 entries a compare mask picks a lane permutation from a table.
struct PackTable {
  alignas(32) int32_t idx[256][8];
  PackTable() {
    for (int m = 0; m < 256; ++m) {
      int k = 0;
      for (int j = 0; j < 8; ++j)
        if (m >> j & 1) idx[m][k++] = j;
      while (k < 8) idx[m][k++] = 0;
    }
  }
};
const PackTable kPack;

inline int64_t left_pack_range(const float* x, int64_t n, float T, float* out) {
  const __m256 zero = _mm256_setzero_ps(), tv = _mm256_set1_ps(T);
  int64_t k = 0;
  for (int64_t i = 0; i < n; i += 8) {
    const __m256 v = _mm256_loadu_ps(x + i);
    const int mask = _mm256_movemask_ps(_mm256_and_ps(_mm256_cmp_ps(v, zero, _CMP_GT_OQ),
                                                      _mm256_cmp_ps(v, tv, _CMP_LE_OQ)));
    const __m256i perm = _mm256_load_si256(reinterpret_cast<const __m256i*>(kPack.idx[mask]));
    _mm256_storeu_ps(out + k, _mm256_permutevar8x32_ps(v, perm));
    k += std::popcount(static_cast<unsigned>(mask));
  }
  return k;
}

// The lo-th and hi-th smallest (hi < 16 <= n) of x[0..n): each entry goes into a sorted window
// of the 16 smallest so far (two registers) without branches: w'[j] = max(w[j-1], min(w[j], y)).
inline void smallest16(const float* x, int64_t n, int64_t lo, int64_t hi, float& a, float& b) {
  const __m256 inf = _mm256_set1_ps(INFINITY), ninf = _mm256_set1_ps(-INFINITY);
  const __m256i rot = _mm256_setr_epi32(7, 0, 1, 2, 3, 4, 5, 6);
  __m256 A = inf, B = inf;
  for (int64_t i = 0; i < n; ++i) {
    const __m256 y = _mm256_set1_ps(x[i]);
    const __m256 ra = _mm256_permutevar8x32_ps(A, rot), rb = _mm256_permutevar8x32_ps(B, rot);
    const __m256 sa = _mm256_blend_ps(ra, ninf, 1), sb = _mm256_blend_ps(rb, ra, 1);
    A = _mm256_max_ps(sa, _mm256_min_ps(A, y));
    B = _mm256_max_ps(sb, _mm256_min_ps(B, y));
  }
  alignas(32) float w[16];
  _mm256_store_ps(w, A);
  _mm256_store_ps(w + 8, B);
  a = w[lo];
  b = w[hi];
}

template <int MBITS, int VBITS, bool LOG>
void block_avx2(const Args& a, int64_t blk, Scratch& s, const LogConsts& lc, const float* mlev,
                const float* vlev) {
  const int64_t B = a.block;
  float* mb = s.m.data();
  float* vb = s.v.data();
  const int64_t start = blk * B;
  const int64_t len = std::min(B, a.n - start);
  uint8_t* MC = a.MC + start * MBITS / 8;
  uint8_t* VC = a.VC + start * VBITS / 8;
  float* P = a.P + start;
  const float* G = a.G + start;
  const __m256 ms = _mm256_set1_ps(a.MS[blk]);
  alignas(32) float vtab[1 << (VBITS > 3 ? VBITS : 3)] = {};
  __m256 vs;
  if constexpr (LOG) {
    log_table<VBITS>(a.VA[blk], a.VS[blk], vtab);
    vs = _mm256_set1_ps(1.0f);  // the table holds alpha^k * scale already
  } else {
    vs = _mm256_set1_ps(a.VS[blk]);
  }
  const float* vt = LOG ? vtab : vlev;
  const bool wd = a.weight_decay != 0, small_w = std::abs(a.w) < 0.5f;
  const __m256 decay = _mm256_set1_ps(a.decay), w = _mm256_set1_ps(a.w),
               omw = _mm256_set1_ps(1.0f - a.w), b2 = _mm256_set1_ps(a.b2),
               omb2 = _mm256_set1_ps(a.omb2), epsf = _mm256_set1_ps(a.epsf),
               beps = _mm256_set1_ps(a.beps), bc2 = _mm256_set1_ps(a.bc2),
               stepf = _mm256_set1_ps(a.step),
               zero = _mm256_setzero_ps(), inf = _mm256_set1_ps(INFINITY),
               absmask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7FFFFFFF));
  __m256 mmax = zero, vmax = zero, min1 = inf, min2 = inf;
  __m256i npos = _mm256_setzero_si256();
  for (int64_t i = 0; i < len; i += 8) {
    __m256 m = _mm256_mul_ps(lookup<MBITS>(mlev, load_codes<MBITS>(MC + i * MBITS / 8)), ms);
    __m256 v = _mm256_mul_ps(lookup<VBITS>(vt, load_codes<VBITS>(VC + i * VBITS / 8)), vs);
    const __m256 g = _mm256_loadu_ps(G + i);
    __m256 p = _mm256_loadu_ps(P + i);
    if (wd) p = _mm256_mul_ps(p, decay);
    m = small_w ? _mm256_add_ps(m, _mm256_mul_ps(w, _mm256_sub_ps(g, m)))
                : _mm256_sub_ps(g, _mm256_mul_ps(_mm256_sub_ps(g, m), omw));
    if (a.belief) {
      const __m256 d = _mm256_sub_ps(g, m);
      v = _mm256_add_ps(_mm256_add_ps(_mm256_mul_ps(v, b2), _mm256_mul_ps(_mm256_mul_ps(omb2, d), d)), beps);
    } else {
      v = _mm256_add_ps(_mm256_mul_ps(v, b2), _mm256_mul_ps(_mm256_mul_ps(omb2, g), g));
    }
    const __m256 den = _mm256_add_ps(_mm256_div_ps(_mm256_sqrt_ps(v), bc2), epsf);
    p = _mm256_add_ps(p, _mm256_div_ps(_mm256_mul_ps(stepf, m), den));
    _mm256_storeu_ps(P + i, p);
    _mm256_storeu_ps(mb + i, m);
    _mm256_storeu_ps(vb + i, v);
    mmax = _mm256_max_ps(mmax, _mm256_and_ps(m, absmask));
    vmax = _mm256_max_ps(vmax, v);
    if constexpr (LOG) {  // per lane, the two smallest positive entries (see the quantile below)
      const __m256 pos = _mm256_cmp_ps(v, zero, _CMP_GT_OQ);
      const __m256 x = _mm256_blendv_ps(inf, v, pos);
      min2 = _mm256_min_ps(min2, _mm256_max_ps(min1, x));
      min1 = _mm256_min_ps(min1, x);
      npos = _mm256_sub_epi32(npos, _mm256_castps_si256(pos));
    }
  }
  const float mscale = std::max(hmax(mmax), kTiny), vscale = std::max(hmax(vmax), kTiny);
  a.MS[blk] = mscale;
  a.VS[blk] = vscale;
  const __m256 msv = _mm256_set1_ps(mscale), vsv = _mm256_set1_ps(vscale);
  for (int64_t i = 0; i < len; i += 8)
    store_codes<MBITS>(MC + i * MBITS / 8,
                       count_below<MBITS>(_mm256_div_ps(_mm256_loadu_ps(mb + i), msv), a.ms));
  if constexpr (LOG) {
    // Exact p-quantile of the positive entries: every lane has two positives <= T (when T is
    // finite), so the 16+ entries in (0, T] contain the hi + 1 smallest whenever hi < 16.
    const int64_t k = hsum(npos);
    float xp = 0.0f;
    if (k > 0) {
      int64_t lo, hi;
      const float pos = quantile_pos(a.quantile, k, lo, hi);
      const float T = hmax(min2);
      if (hi < 16 && T < INFINITY) {
        float* cand = s.u.data();
        const int64_t nc = left_pack_range(vb, len, T, cand);
        float lo_v, hi_v;
        smallest16(cand, nc, lo, hi, lo_v, hi_v);
        xp = interpolate(lo_v, hi_v, pos, lo);
      } else {
        xp = positive_quantile(vb, len, a.quantile, s.buf);
      }
    }
    const float alpha = lc.alpha(xp, vscale);
    a.VA[blk] = alpha;
    const __m256 la = _mm256_set1_ps(std::log(alpha)), tiny = _mm256_set1_ps(kTiny),
                 top = _mm256_set1_ps(lc.vtopf);
    const uint32_t k0 = static_cast<uint32_t>(a.key), k1 = static_cast<uint32_t>(a.key >> 32);
    for (int64_t i = 0; i < len; i += 8) {
      const __m256 r = a.R ? _mm256_loadu_ps(a.R + start + i)
                           : uniform8(k0, k1, static_cast<uint32_t>(start + i));
      const __m256 x = _mm256_max_ps(_mm256_div_ps(_mm256_loadu_ps(vb + i), vsv), tiny);
      const __m256 t = _mm256_div_ps(log_normal8(x), la);
      const __m256 c = _mm256_min_ps(_mm256_max_ps(_mm256_floor_ps(_mm256_add_ps(t, r)), zero), top);
      store_codes<VBITS>(VC + i * VBITS / 8, _mm256_cvttps_epi32(c));
    }
  } else {
    for (int64_t i = 0; i < len; i += 8)
      store_codes<VBITS>(VC + i * VBITS / 8,
                         count_below<VBITS>(_mm256_div_ps(_mm256_loadu_ps(vb + i), vsv), a.vs));
  }
}
#endif

// Whether blocks whose length is a multiple of 8 take the AVX2 path (tests switch it off to
// compare both paths).
bool g_vectorized = true;

template <int MBITS, int VBITS, bool LOG>
void run_blocks(const Args& a, int64_t b0, int64_t b1) {
  Scratch s(a.block);
  const LogConsts lc(VBITS);  // pow() of doubles: once per task, not per block
#ifdef SOLO_AVX2
  // Level tables padded for 8-wide lookups; the AVX2 path needs 2^bits - 1 boundaries.
  alignas(32) float mlev[256] = {}, vlev[256] = {};
  std::copy(a.ML, a.ML + (1 << MBITS), mlev);
  if (!LOG) std::copy(a.VL, a.VL + (1 << VBITS), vlev);
  const bool simd = g_vectorized && a.mnb == (1 << MBITS) - 1 &&
                    (LOG || a.vnb == (1 << VBITS) - 1);
#endif
  for (int64_t blk = b0; blk < b1; ++blk) {
#ifdef SOLO_AVX2
    if (simd && std::min(a.block, a.n - blk * a.block) % 8 == 0) {
      block_avx2<MBITS, VBITS, LOG>(a, blk, s, lc, mlev, vlev);
      continue;
    }
#endif
    block_scalar<MBITS, VBITS, LOG>(a, blk, s, lc);
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

Search search(const float* bounds, int nb, const torch::Tensor& lut, const torch::Tensor& bpad) {
  Search sr;
  sr.bounds = bounds;
  sr.nb = nb;
  if (nb == 255 && lut.numel() == 2 * kLutKeys && bpad.numel() > nb) {
    sr.lut = lut.data_ptr<int32_t>();
    sr.bpad = bpad.data_ptr<float>();
    sr.depth = static_cast<int>(bpad.numel()) - nb;
  }
  return sr;
}

// Bytes of n packed codes of `bits` bits (solo/packing.py packed_numel).
int64_t packed_numel(int64_t n, int64_t bits) {
  return bits == 3 ? (n + 7) / 8 * 3 : (n + 8 / bits - 1) / (8 / bits);
}

// Every input is checked before any pointer is taken: a wrong dtype, device, layout or size
// (a state edited by hand, a group knob changed under existing states) raises RuntimeError
// instead of reading or writing out of bounds.
void check_tensor(const torch::Tensor& t, const char* name, c10::ScalarType dtype, int64_t numel) {
  TORCH_CHECK(t.device().is_cpu(), "fused_step: ", name, " must be a CPU tensor, got ", t.device());
  TORCH_CHECK(t.scalar_type() == dtype, "fused_step: ", name, " must be ", dtype, ", got ",
              t.scalar_type());
  TORCH_CHECK(t.is_contiguous(), "fused_step: ", name, " must be contiguous");
  TORCH_CHECK(numel < 0 || t.numel() == numel, "fused_step: ", name, " has ", t.numel(),
              " elements, expected ", numel);
}

void check_search(const torch::Tensor& lut, const torch::Tensor& bpad, int64_t nb, const char* name) {
  if (lut.numel() == 0) return;
  check_tensor(lut, name, torch::kInt32, 2 * kLutKeys);
  check_tensor(bpad, name, torch::kFloat32, -1);
  TORCH_CHECK(bpad.numel() > nb, "fused_step: ", name, " padding must extend the boundaries");
  const int32_t* l = lut.data_ptr<int32_t>();
  for (int64_t k = 0; k < lut.numel(); ++k)
    TORCH_CHECK(l[k] >= 0 && l[k] <= nb, "fused_step: ", name, " entry out of range");
}

// One step for one parameter. Tensors are contiguous CPU; p, g float32 of n elements.
// m: codes/scales + levels/bounds (signed); v: codes/scales (+ alphas for log) + levels/bounds.
// block: elements per block (a block never exceeds the tensor: min(block, n) is used).
// belief_eps: what AdaBelief adds to s each step (eps, or 0 for the reference SOLO variant).
// rand: float32 of at least n (the reference's draws) or empty (then uniform(key, i)).
// m_lut/m_bpad, v_lut/v_bpad: bucket tables of 8-bit codebooks (Search), or empty.
void fused_step(torch::Tensor p, torch::Tensor g, torch::Tensor m_codes, torch::Tensor m_scales,
                torch::Tensor m_levels, torch::Tensor m_bounds, int64_t m_bits,
                torch::Tensor v_codes, torch::Tensor v_scales, torch::Tensor v_alphas,
                torch::Tensor v_levels, torch::Tensor v_bounds, int64_t v_bits, bool v_log,
                int64_t block, double quantile, double lr, double beta1, double beta2,
                double eps, double weight_decay, double bc1, double bc2_sqrt, bool belief,
                double belief_eps, torch::Tensor rand, int64_t key, torch::Tensor m_lut,
                torch::Tensor m_bpad, torch::Tensor v_lut, torch::Tensor v_bpad) {
  const auto ok_bits = [](int64_t b) { return b == 2 || b == 3 || b == 4 || b == 8; };
  TORCH_CHECK(ok_bits(m_bits) && ok_bits(v_bits), "fused_step: bits must be 2, 3, 4 or 8, got (",
              m_bits, ", ", v_bits, ")");
  TORCH_CHECK(block > 0, "fused_step: block must be positive, got ", block);
  TORCH_CHECK(quantile >= 0.0 && quantile <= 1.0, "fused_step: quantile must be in [0, 1], got ",
              quantile);
  const int64_t n = p.numel();
  check_tensor(p, "param", torch::kFloat32, -1);
  check_tensor(g, "grad", torch::kFloat32, n);
  if (n == 0) return;
  block = std::min(block, n);
  const int64_t nblocks = (n + block - 1) / block;
  TORCH_CHECK(nblocks == 1 || block % 8 == 0, "fused_step: block must be a multiple of 8 "
              "(blocks start at whole groups of packed codes), got ", block);
  check_tensor(m_codes, "m_codes", torch::kUInt8, packed_numel(n, m_bits));
  check_tensor(m_scales, "m_scales", torch::kFloat32, nblocks);
  check_tensor(m_levels, "m_levels", torch::kFloat32, int64_t(1) << m_bits);
  check_tensor(m_bounds, "m_bounds", torch::kFloat32, (int64_t(1) << m_bits) - 1);
  check_tensor(v_codes, "v_codes", torch::kUInt8, packed_numel(n, v_bits));
  check_tensor(v_scales, "v_scales", torch::kFloat32, nblocks);
  if (v_log) {
    check_tensor(v_alphas, "v_alphas", torch::kFloat32, nblocks);
  } else {
    check_tensor(v_levels, "v_levels", torch::kFloat32, int64_t(1) << v_bits);
    check_tensor(v_bounds, "v_bounds", torch::kFloat32, (int64_t(1) << v_bits) - 1);
    check_search(v_lut, v_bpad, v_bounds.numel(), "v_lut");
  }
  check_search(m_lut, m_bpad, m_bounds.numel(), "m_lut");
  if (rand.numel()) {
    check_tensor(rand, "rand", torch::kFloat32, -1);
    TORCH_CHECK(rand.numel() >= n, "fused_step: rand has ", rand.numel(),
                " elements, expected at least ", n);
  }
  Args a;
  a.n = n;
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
  a.ms = search(a.MB, a.mnb, m_lut, m_bpad);
  if (!v_log) a.vs = search(a.VB, a.vnb, v_lut, v_bpad);
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
  a.beps = static_cast<float>(belief_eps);
  a.bc2 = static_cast<float>(bc2_sqrt);
  a.step = static_cast<float>(-lr / bc1);
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
  m.def("set_vectorized", [](bool on) { g_vectorized = on; },
        "use the AVX2 block path where it applies (default on)");
  m.def("vectorized", [] {
#ifdef SOLO_AVX2
    return g_vectorized;
#else
    return false;
#endif
  }, "whether blocks whose length is a multiple of 8 take the AVX2 path");
}
