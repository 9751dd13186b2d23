// Fused CPU kernels for LayerNorm, RMSNorm (each with an optional residual add), DyT, Derf and
// the gated, grouped RMSNorm.
//
// The ops mirror the Triton ones (normlab/kernels/triton/ops.py), so the same fake and autograd
// rules serve both:
//
//   normlab_cpu::norm_fwd(x, residual?, weight?, bias?, eps, rms) -> (y, h, mean, rstd)
//   normlab_cpu::norm_bwd(dy, dh?, x, weight?, mean, rstd, need_dw, need_db, rms) -> (dx, dw, db)
//   normlab_cpu::dyt_fwd(x, alpha, weight?, bias?) -> y
//   normlab_cpu::dyt_bwd(dy, x, alpha, weight?, need_dalpha, need_dw, need_db)
//       -> (dx, dalpha, dw, db)
//   normlab_cpu::derf_fwd / derf_bwd, gated_fwd / gated_bwd   (normlab/kernels/op_rules.py)
//
// x is (..., D), contiguous, read as M rows of D; float16/bfloat16/float32/float64. Statistics,
// parameters and parameter gradients are in the accumulation type A: double for float64 input,
// float otherwise.
//
//   LayerNorm   y = (h − μ)·rstd·w + b,   rstd = 1/sqrt(mean((h − μ)²) + eps)
//   RMSNorm     y = h·rstd·w + b,         rstd = 1/sqrt(mean(h²) + eps)
//   backward    dx = rstd·(g·w − [mean(g·w)] − x̂·mean(g·w·x̂)) (+ dh), [..] in LayerNorm only
//   DyT         y = w·tanh(α·x) + b,      dx = g·w·α·(1 − t²), dα = Σ g·w·x·(1 − t²)
//
// Every row is read once per pass from L1/L2 (a row of a few KB stays cached between the
// statistics loop and the output loop), so each direction costs one read of each input and one
// write of each output, like ATen's own LayerNorm kernel. Rows are split over ATen's thread pool;
// the per-channel sums of the backward go to one partial row per chunk, summed at the end.

#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <ATen/ops/full.h>
#include <ATen/ops/mul.h>
#include <ATen/ops/zeros.h>
#include <torch/csrc/autograd/custom_function.h>
#include <torch/library.h>

#include <cmath>
#include <cstdint>
#if defined(__AVX2__) && defined(__FMA__)
#define NORMLAB_AVX2 1
#include <immintrin.h>
#endif
#include <algorithm>
#include <optional>
#include <vector>

// glibc's scalar tanh, erf and exp under other names, declared SIMD-callable: GCC then calls
// libmvec's vector variants (_ZGVdN4v_tanh, _ZGVdN8v_erff, _ZGVdN8v_expf, ...; erf since glibc
// 2.35) from vectorized loops without -ffast-math.
extern "C" {
#pragma omp declare simd notinbranch
double vec_tanh(double) noexcept __asm__("tanh");
#pragma omp declare simd notinbranch
double vec_erf(double) noexcept __asm__("erf");
#pragma omp declare simd notinbranch
float vec_erff(float) noexcept __asm__("erff");
#pragma omp declare simd notinbranch
double vec_exp(double) noexcept __asm__("exp");
#pragma omp declare simd notinbranch
float vec_expf(float) noexcept __asm__("expf");
}

namespace {

using at::Tensor;

// tanh in float: tanh(z) ≈ c·P(c²)/Q(c²), c = z clamped to [−9, 9] (beyond, tanh rounds to ±1
// in float), P and Q of degree 4 with P(0) = Q(0) = 1, fitted to tanh for least relative error
// (2.6e-8 in exact arithmetic, at most 3.3e-7 = 5.6 ulp in float). The clamps keep a NaN: like
// x86's min/max instructions, `9 < z ? 9 : z` returns z when z is NaN.
constexpr float kTanhP[5] = {1.0f, 1.33784382e-1f, 3.49243749e-3f, 2.05548349e-5f,
                             1.32766655e-8f};
constexpr float kTanhQ[5] = {1.0f, 4.67117584e-1f, 2.58651895e-2f, 3.28036856e-4f,
                             7.74513882e-7f};

inline float tanh_of(float z) {
  float c = 9.0f < z ? 9.0f : z;
  c = -9.0f > c ? -9.0f : c;
  const float s = c * c;
  float p = kTanhP[4], q = kTanhQ[4];
  for (int i = 3; i >= 0; --i) {
    p = p * s + kTanhP[i];
    q = q * s + kTanhQ[i];
  }
  return c * p / q;
}

#ifdef NORMLAB_AVX2
inline __m256 splat(float v) { return _mm256_set1_ps(v); }

// tanh(α·x) on eight lanes, with α folded into the coefficients of tanh_of: for c = x clamped
// to ±9/|α|,
//   tanh(α·c) ≈ c·P̃(c²)/Q̃(c²),   p̃ᵢ = α^(2i+1)·pᵢ,   q̃ᵢ = α^(2i)·qᵢ,
// which spares the product α·x, one of the twelve multiplies or FMAs per element that bound the
// forward on CPUs with 128-bit FP units. At α = 1 the coefficients are tanh_of's. The folded
// coefficients and the Horner sums made of them stay normal floats while `folds(α)` (the
// smallest, p̃₄, leaves the normal range below |α| ≈ 2⁻¹¹); other α take the plain loops. GCC
// vectorizes tanh_of's clamps into compare-and-blend sequences instead of min/max, so the
// float loops are written by hand with this.
class ScaledTanh8 {
 public:
  static bool folds(float alpha) {
    const float a = std::fabs(alpha);
    return a >= 0x1p-8f && a <= 0x1p8f;
  }

  explicit ScaledTanh8(float alpha)
      : hi_(splat(9.0f / std::fabs(alpha))), lo_(splat(-9.0f / std::fabs(alpha))) {
    double even = 1.0;  // α^(2i)
    for (int i = 0; i < 5; ++i) {
      p_[i] = splat(static_cast<float>(alpha * even * kTanhP[i]));
      q_[i] = splat(static_cast<float>(even * kTanhQ[i]));
      even *= double(alpha) * alpha;
    }
  }

  __m256 operator()(__m256 x) const {
    const __m256 c = _mm256_max_ps(lo_, _mm256_min_ps(hi_, x));
    const __m256 s = _mm256_mul_ps(c, c);
    __m256 p = p_[4], q = q_[4];
    for (int i = 3; i >= 0; --i) {
      p = _mm256_fmadd_ps(p, s, p_[i]);
      q = _mm256_fmadd_ps(q, s, q_[i]);
    }
    return _mm256_div_ps(_mm256_mul_ps(c, p), q);
  }

 private:
  __m256 hi_, lo_, p_[5], q_[5];
};

inline float sum8(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  return _mm_cvtss_f32(_mm_add_ss(s, _mm_movehdup_ps(s)));
}

// Loads and stores of eight lanes: all of them, or only the first n (the end of a row). Masked
// lanes load as 0 and are not stored.
struct AllLanes {
  __m256 load(const float* p) const { return _mm256_loadu_ps(p); }
  void store(float* p, __m256 v) const { _mm256_storeu_ps(p, v); }
};

struct FirstLanes {
  explicit FirstLanes(int64_t n)
      : mask(_mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(std::min<int64_t>(n, 8))),
                                _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7))) {}
  __m256 load(const float* p) const { return _mm256_maskload_ps(p, mask); }
  void store(float* p, __m256 v) const { _mm256_maskstore_ps(p, mask, v); }
  __m256i mask;
};

// How far ahead of the loads the float loops prefetch: 2 KB, a few hundred cycles of work.
constexpr int64_t kPrefetchAhead = 512;

// Prefetches element i of a float array. i may lie past the array's end: a prefetch does not
// fault, and the address is formed as an integer, so no pointer leaves its array.
inline void prefetch(const float* base, int64_t i) {
  const auto address = reinterpret_cast<std::uintptr_t>(base) + sizeof(float) * i;
  _mm_prefetch(reinterpret_cast<const char*>(address), _MM_HINT_T0);
}

// Runs lanes(i, io) over a row of d floats: one 64-byte line (two vectors) per step, after
// prefetch_line(i + kPrefetchAhead), then the rest eight lanes at a time, the last ones masked,
// so every element of a row goes through the same operations.
template <typename Prefetch, typename Lanes>
void for_lanes(int64_t d, Prefetch&& prefetch_line, Lanes&& lanes) {
  const int64_t body = d / 16 * 16;
  for (int64_t i = 0; i < body; i += 16) {
    prefetch_line(i + kPrefetchAhead);
    lanes(i, AllLanes{});
    lanes(i + 8, AllLanes{});
  }
  for (int64_t i = body; i < d; i += 8) lanes(i, FirstLanes(d - i));
}
#endif

inline double tanh_of(double v) { return vec_tanh(v); }
inline float erf_of(float v) { return vec_erff(v); }
inline double erf_of(double v) { return vec_erf(v); }
inline float exp_of(float v) { return vec_expf(v); }
inline double exp_of(double v) { return vec_exp(v); }
using OptTensor = std::optional<Tensor>;

// Rows per parallel chunk: enough work (~16K elements) to pay for a task.
int64_t grain_rows(int64_t d) { return std::max<int64_t>(1, 16384 / std::max<int64_t>(d, 1)); }

// The number of chunks for a reduction over rows, and the row range of chunk c.
int64_t n_chunks(int64_t m, int64_t d) {
  const int64_t by_work = (m + grain_rows(d) - 1) / grain_rows(d);
  return std::max<int64_t>(1, std::min<int64_t>(at::get_num_threads(), by_work));
}
int64_t chunk_begin(int64_t c, int64_t chunks, int64_t m) { return c * m / chunks; }

void check_rows(const Tensor& x, const char* name) {
  TORCH_CHECK(x.dim() >= 1 && x.size(-1) >= 1 && x.is_contiguous() && x.device().is_cpu(),
              name, " must be a contiguous CPU tensor of shape (..., D) with D >= 1");
}

// x as (M, D) rows: M is the product of the leading dimensions.
int64_t n_rows(const Tensor& x) { return x.numel() / x.size(-1); }

at::ScalarType acc_type(const Tensor& x) {
  return x.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
}

// A (D,) parameter in the accumulation type; an absent one is `fill` (1 for a weight, 0 for a
// bias), so the inner loops carry no branches and vectorize.
Tensor param_or(const OptTensor& p, const Tensor& x, double fill) {
  if (!p.has_value()) return at::full({x.size(-1)}, fill, x.options().dtype(acc_type(x)));
  TORCH_CHECK(p->dim() == 1 && p->size(0) == x.size(-1), "parameter must have shape (D,)");
  return p->to(acc_type(x)).contiguous();
}

// Σ term(i) over i < d with kLanes independent partial sums. In a single-thread test at D = 768
// this ran as fast as one vector accumulator (the row read dominates); the partial sums keep
// the rounding error of long rows smaller.
template <typename A, typename F>
A lane_sum(int64_t d, F&& term) {
  constexpr int64_t kLanes = 32;
  A part[kLanes] = {};
  int64_t i = 0;
  for (; i + kLanes <= d; i += kLanes) {
#pragma omp simd
    for (int64_t j = 0; j < kLanes; ++j) part[j] += term(i + j);
  }
  A total = 0;
  for (; i < d; ++i) total += term(i);
  for (int64_t j = 0; j < kLanes; ++j) total += part[j];
  return total;
}

// ---------------------------------------------------------------- LayerNorm / RMSNorm forward

template <typename T, typename A>
void norm_fwd_rows(const T* x, const T* res, const A* w, const A* b, T* y, T* h, A* mean_out,
                   A* rstd_out, int64_t r0, int64_t r1, int64_t d, A eps, bool rms) {
  for (int64_t r = r0; r < r1; ++r) {
    const T* xr = x + r * d;
    T* yr = y + r * d;
    const T* src = xr;  // the row that is normalized: x, or h = x + residual rounded to T
    if (res != nullptr) {
      const T* rr = res + r * d;
      T* hr = h + r * d;
#pragma omp simd
      for (int64_t i = 0; i < d; ++i) hr[i] = static_cast<T>(A(xr[i]) + A(rr[i]));
      src = hr;
    }
    const A mu = rms ? A(0) : lane_sum<A>(d, [&](int64_t i) { return A(src[i]); }) / A(d);
    const A ss = lane_sum<A>(d, [&](int64_t i) {
      const A v = A(src[i]) - mu;
      return v * v;
    });
    const A rstd = A(1) / std::sqrt(ss / A(d) + eps);
    if (!rms) mean_out[r] = mu;
    rstd_out[r] = rstd;
#pragma omp simd
    for (int64_t i = 0; i < d; ++i) yr[i] = static_cast<T>((A(src[i]) - mu) * rstd * w[i] + b[i]);
  }
}

std::tuple<Tensor, Tensor, Tensor, Tensor> norm_fwd(const Tensor& x, const OptTensor& residual,
                                                    const OptTensor& weight,
                                                    const OptTensor& bias, double eps, bool rms) {
  check_rows(x, "x");
  const int64_t m = n_rows(x), d = x.size(-1);
  if (residual.has_value()) {
    check_rows(*residual, "residual");
    TORCH_CHECK(residual->sizes() == x.sizes() && residual->scalar_type() == x.scalar_type(),
                "residual must match x in shape and dtype");
  }
  const Tensor w = param_or(weight, x, 1.0), b = param_or(bias, x, 0.0);
  const auto acc = x.options().dtype(acc_type(x));
  Tensor y = at::empty_like(x);
  Tensor h = residual.has_value() ? at::empty_like(x) : at::empty({0}, x.options());
  Tensor mean = at::empty({rms ? 0 : m}, acc);
  Tensor rstd = at::empty({m}, acc);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "norm_fwd", [&] {
    using A = std::conditional_t<std::is_same_v<scalar_t, double>, double, float>;
    const scalar_t* res = residual.has_value() ? residual->data_ptr<scalar_t>() : nullptr;
    at::parallel_for(0, m, grain_rows(d), [&](int64_t r0, int64_t r1) {
      norm_fwd_rows<scalar_t, A>(x.data_ptr<scalar_t>(), res, w.data_ptr<A>(),
                                 b.data_ptr<A>(), y.data_ptr<scalar_t>(),
                                 h.data_ptr<scalar_t>(), rms ? nullptr : mean.data_ptr<A>(),
                                 rstd.data_ptr<A>(), r0, r1, d, A(eps), rms);
    });
  });
  return {y, h, mean, rstd};
}

// --------------------------------------------------------------- LayerNorm / RMSNorm backward

template <typename T, typename A>
void norm_bwd_rows(const T* dy, const T* dh, const T* x, const A* w, const A* mean,
                   const A* rstd, T* dx, A* dw_part, A* db_part, int64_t r0, int64_t r1,
                   int64_t d, bool rms) {
  for (int64_t r = r0; r < r1; ++r) {
    const T* g = dy + r * d;
    const T* xr = x + r * d;
    const A mu = rms ? A(0) : mean[r];
    const A rs = rstd[r];
    const A c1 = lane_sum<A>(d, [&](int64_t i) { return A(g[i]) * w[i] * (A(xr[i]) - mu); }) *
                 rs / A(d);
    const A c0 = rms ? A(0) : lane_sum<A>(d, [&](int64_t i) { return A(g[i]) * w[i]; }) / A(d);
    T* dxr = dx + r * d;
#pragma omp simd
    for (int64_t i = 0; i < d; ++i) {
      const A xhat = (A(xr[i]) - mu) * rs;
      dxr[i] = static_cast<T>(rs * (A(g[i]) * w[i] - c0 - xhat * c1));
    }
    // The parameter gradients' partial sums, each its own pass over the cached row.
    if (dw_part != nullptr) {
#pragma omp simd
      for (int64_t i = 0; i < d; ++i) dw_part[i] += A(g[i]) * (A(xr[i]) - mu) * rs;
    }
    if (db_part != nullptr) {
#pragma omp simd
      for (int64_t i = 0; i < d; ++i) db_part[i] += A(g[i]);
    }
    if (dh != nullptr) {
      const T* dhr = dh + r * d;
#pragma omp simd
      for (int64_t i = 0; i < d; ++i) dxr[i] = static_cast<T>(A(dxr[i]) + A(dhr[i]));
    }
  }
}

std::tuple<Tensor, Tensor, Tensor> norm_bwd(const Tensor& dy, const OptTensor& dh,
                                            const Tensor& x, const OptTensor& weight,
                                            const Tensor& mean, const Tensor& rstd,
                                            bool need_dw, bool need_db, bool rms) {
  check_rows(x, "x");
  check_rows(dy, "dy");
  TORCH_CHECK(dy.sizes() == x.sizes() && dy.scalar_type() == x.scalar_type(),
              "dy must match x in shape and dtype");
  if (dh.has_value()) {
    check_rows(*dh, "dh");
    TORCH_CHECK(dh->sizes() == x.sizes() && dh->scalar_type() == x.scalar_type(),
                "dh must match x in shape and dtype");
  }
  const int64_t m = n_rows(x), d = x.size(-1);
  const Tensor w = param_or(weight, x, 1.0);
  const auto acc = x.options().dtype(acc_type(x));
  TORCH_CHECK(rstd.scalar_type() == acc_type(x) && rstd.numel() == m, "rstd must be (M,)");
  TORCH_CHECK(rms || (mean.scalar_type() == acc_type(x) && mean.numel() == m),
              "mean must be (M,)");
  const int64_t chunks = n_chunks(m, d);
  Tensor dx = at::empty_like(x);
  Tensor dw_part = at::zeros({need_dw ? chunks : 0, d}, acc);
  Tensor db_part = at::zeros({need_db ? chunks : 0, d}, acc);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "norm_bwd", [&] {
    using A = std::conditional_t<std::is_same_v<scalar_t, double>, double, float>;
    const scalar_t* dh_ptr = dh.has_value() ? dh->data_ptr<scalar_t>() : nullptr;
    at::parallel_for(0, chunks, 1, [&](int64_t c0, int64_t c1) {
      for (int64_t c = c0; c < c1; ++c) {
        norm_bwd_rows<scalar_t, A>(
            dy.data_ptr<scalar_t>(), dh_ptr, x.data_ptr<scalar_t>(), w.data_ptr<A>(),
            rms ? nullptr : mean.data_ptr<A>(), rstd.data_ptr<A>(), dx.data_ptr<scalar_t>(),
            need_dw ? dw_part.data_ptr<A>() + c * d : nullptr,
            need_db ? db_part.data_ptr<A>() + c * d : nullptr, chunk_begin(c, chunks, m),
            chunk_begin(c + 1, chunks, m), d, rms);
      }
    });
  });
  return {dx, need_dw ? dw_part.sum(0) : dw_part.new_empty({0}),
          need_db ? db_part.sum(0) : db_part.new_empty({0})};
}

// ----------------------------------------------------------------------------------------- DyT

// row(r) for every row r < m, the rows split over ATen's thread pool.
template <typename Row>
void parallel_rows(int64_t m, int64_t d, Row&& row) {
  at::parallel_for(0, m, grain_rows(d), [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) row(r);
  });
}

// One row of the forward: y = w·tanh(α·x) + b.
template <typename T, typename A>
void dyt_fwd_row(const T* x, A alpha, const A* w, const A* b, T* y, int64_t d) {
#pragma omp simd
  for (int64_t i = 0; i < d; ++i) y[i] = static_cast<T>(tanh_of(alpha * A(x[i])) * w[i] + b[i]);
}

// The fast path of the forward: float rows on eight lanes with the folded tanh, where α folds.
// Returns whether it ran; the generic overload never does.
template <typename T, typename A>
bool dyt_fwd_folded(const T*, A, const A*, const A*, T*, int64_t, int64_t) {
  return false;
}

#ifdef NORMLAB_AVX2
void dyt_fwd_row(const float* x, const ScaledTanh8& scaled_tanh, const float* w, const float* b,
                 float* y, int64_t d) {
  for_lanes(d, [&](int64_t i) { prefetch(x, i); }, [&](int64_t i, const auto& io) {
    const __m256 t = scaled_tanh(io.load(x + i));
    io.store(y + i, _mm256_fmadd_ps(t, io.load(w + i), io.load(b + i)));
  });
}

bool dyt_fwd_folded(const float* x, float alpha, const float* w, const float* b, float* y,
                    int64_t m, int64_t d) {
  if (!ScaledTanh8::folds(alpha)) return false;
  const ScaledTanh8 scaled_tanh(alpha);
  parallel_rows(m, d,
                [&](int64_t r) { dyt_fwd_row(x + r * d, scaled_tanh, w, b, y + r * d, d); });
  return true;
}
#endif

Tensor dyt_fwd(const Tensor& x, const Tensor& alpha, const OptTensor& weight,
               const OptTensor& bias) {
  check_rows(x, "x");
  TORCH_CHECK(alpha.numel() == 1, "alpha must have one element");
  const int64_t m = n_rows(x), d = x.size(-1);
  const Tensor w = param_or(weight, x, 1.0), b = param_or(bias, x, 0.0);
  Tensor y = at::empty_like(x);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "dyt_fwd", [&] {
    using A = std::conditional_t<std::is_same_v<scalar_t, double>, double, float>;
    const A a = alpha.item<A>();
    const scalar_t* xp = x.data_ptr<scalar_t>();
    scalar_t* yp = y.data_ptr<scalar_t>();
    const A *wp = w.data_ptr<A>(), *bp = b.data_ptr<A>();
    if (dyt_fwd_folded(xp, a, wp, bp, yp, m, d)) return;
    parallel_rows(m, d, [&](int64_t r) { dyt_fwd_row(xp + r * d, a, wp, bp, yp + r * d, d); });
  });
  return y;
}

// One row of the backward: dx = g·w·α·(1 − t²). With dw (and db) given, it also adds g·t to dw
// and g to db, and returns the row's part of dα, Σ g·w·x·(1 − t²).
template <typename T, typename A>
A dyt_bwd_row(const T* g, const T* x, A alpha, const A* w, T* dx, A* dw, A* db, int64_t d) {
  if (dw == nullptr) {
#pragma omp simd
    for (int64_t i = 0; i < d; ++i) {
      const A t = tanh_of(alpha * A(x[i]));
      dx[i] = static_cast<T>(A(g[i]) * w[i] * (A(1) - t * t) * alpha);
    }
    return A(0);
  }
  A da = 0;
#pragma omp simd reduction(+ : da)
  for (int64_t i = 0; i < d; ++i) {
    const A xv = A(x[i]);
    const A t = tanh_of(alpha * xv);
    const A gv = A(g[i]);
    const A gws = gv * w[i] * (A(1) - t * t);  // g·w·(1 − t²)
    dx[i] = static_cast<T>(gws * alpha);
    da += gws * xv;
    dw[i] += gv * t;
    db[i] += gv;
  }
  return da;
}

// The fast path of the backward, like dyt_fwd_folded: run_chunks(row) runs row(r, dw, db) on
// every row r and sums what it returns, the row's part of dα.
template <typename T, typename A, typename Chunks>
bool dyt_bwd_folded(const T*, const T*, A, const Tensor&, T*, int64_t, Chunks&&) {
  return false;
}

#ifdef NORMLAB_AVX2
// The float row on eight lanes with the folded tanh and wa = w·α: dx = g·wa·(1 − t²). With dw
// (and db) given, it adds g·t to dw and g to db. It returns Σ dx·x, which is α times the row's
// part of dα (the generic dyt_bwd_row returns that part itself).
float dyt_bwd_row_scaled(const float* g, const float* x, const ScaledTanh8& scaled_tanh,
                         const float* wa, float* dx, float* dw, float* db, int64_t d) {
  __m256 dx_x = _mm256_setzero_ps();
  const auto prefetch_line = [&](int64_t i) {
    prefetch(x, i);
    prefetch(g, i);
  };
  for_lanes(d, prefetch_line, [&](int64_t i, const auto& io) {
    const __m256 xv = io.load(x + i), gv = io.load(g + i);
    const __m256 t = scaled_tanh(xv);
    const __m256 dxv = _mm256_mul_ps(_mm256_mul_ps(gv, io.load(wa + i)),
                                     _mm256_fnmadd_ps(t, t, splat(1.0f)));
    io.store(dx + i, dxv);
    if (dw != nullptr) {
      dx_x = _mm256_fmadd_ps(dxv, xv, dx_x);
      io.store(dw + i, _mm256_fmadd_ps(gv, t, io.load(dw + i)));
      io.store(db + i, _mm256_add_ps(io.load(db + i), gv));
    }
  });
  return sum8(dx_x);
}

template <typename Chunks>
bool dyt_bwd_folded(const float* g, const float* x, float alpha, const Tensor& w, float* dx,
                    int64_t d, Chunks&& run_chunks) {
  if (!ScaledTanh8::folds(alpha)) return false;
  const ScaledTanh8 scaled_tanh(alpha);
  const Tensor wa = at::mul(w, alpha);
  const float* wap = wa.data_ptr<float>();
  run_chunks([&](int64_t r, float* dw, float* db) {
    const float* gr = g + r * d;
    return dyt_bwd_row_scaled(gr, x + r * d, scaled_tanh, wap, dx + r * d, dw, db, d) / alpha;
  });
  return true;
}
#endif

std::tuple<Tensor, Tensor, Tensor, Tensor> dyt_bwd(const Tensor& dy, const Tensor& x,
                                                   const Tensor& alpha, const OptTensor& weight,
                                                   bool need_dalpha, bool need_dw,
                                                   bool need_db) {
  check_rows(x, "x");
  check_rows(dy, "dy");
  TORCH_CHECK(dy.sizes() == x.sizes() && dy.scalar_type() == x.scalar_type(),
              "dy must match x in shape and dtype");
  TORCH_CHECK(alpha.numel() == 1, "alpha must have one element");
  const int64_t m = n_rows(x), d = x.size(-1);
  const Tensor w = param_or(weight, x, 1.0);
  const auto acc = x.options().dtype(acc_type(x));
  const int64_t chunks = n_chunks(m, d);
  Tensor dx = at::empty_like(x);
  const bool sums = need_dalpha || need_dw || need_db;
  Tensor da_part = at::zeros({chunks}, acc);
  Tensor dw_part = at::zeros({sums ? chunks : 0, d}, acc);
  Tensor db_part = at::zeros({sums ? chunks : 0, d}, acc);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "dyt_bwd", [&] {
    using A = std::conditional_t<std::is_same_v<scalar_t, double>, double, float>;
    const A a = alpha.item<A>();
    const scalar_t *gp = dy.data_ptr<scalar_t>(), *xp = x.data_ptr<scalar_t>();
    scalar_t* dxp = dx.data_ptr<scalar_t>();
    // Each chunk of rows sums its part of dα, dw and db (when asked) into its own slots;
    // row(r, dw, db) runs row r and returns its part of dα.
    const auto run_chunks = [&](auto&& row) {
      at::parallel_for(0, chunks, 1, [&](int64_t c0, int64_t c1) {
        for (int64_t c = c0; c < c1; ++c) {
          A* dw = sums ? dw_part.data_ptr<A>() + c * d : nullptr;
          A* db = sums ? db_part.data_ptr<A>() + c * d : nullptr;
          A da = 0;
          for (int64_t r = chunk_begin(c, chunks, m); r < chunk_begin(c + 1, chunks, m); ++r)
            da += row(r, dw, db);
          da_part.data_ptr<A>()[c] = da;
        }
      });
    };
    if (dyt_bwd_folded(gp, xp, a, w, dxp, d, run_chunks)) return;
    const A* wp = w.data_ptr<A>();
    run_chunks([&](int64_t r, A* dw, A* db) {
      return dyt_bwd_row(gp + r * d, xp + r * d, a, wp, dxp + r * d, dw, db, d);
    });
  });
  return {dx, da_part.sum(), need_dw ? dw_part.sum(0) : dw_part.new_empty({0}),
          need_db ? db_part.sum(0) : db_part.new_empty({0})};
}

// ---------------------------------------------------------------------------------------- Derf
//
//   y = w·erf(z) + b,  z = α·x + s;   with k = erf'(z) = 2/√π·exp(−z²):
//   dx = g·w·α·k,  dα = Σ g·w·k·x,  ds = Σ g·w·k,  dw = Σ g·erf(z),  db = Σ g
//
// (The loops live in templates of their own: a pragma cannot sit inside the dispatch macro.)

template <typename T, typename A>
void derf_fwd_row(const T* x, A alpha, A shift, const A* w, const A* b, T* y, int64_t d) {
#pragma omp simd
  for (int64_t i = 0; i < d; ++i)
    y[i] = static_cast<T>(erf_of(alpha * A(x[i]) + shift) * w[i] + b[i]);
}

// One row of the backward: writes dx, adds g·erf(z) to dw and g to db when given, and adds the
// row's parts of dα and ds to da and ds when `sums`.
template <typename T, typename A>
void derf_bwd_row(const T* g, const T* x, A alpha, A shift, const A* w, T* dx, A* dw, A* db,
                  bool sums, A& da, A& ds, int64_t d) {
  const A k0 = A(1.1283791670955126);  // 2/√π
  if (sums) {
    A row_da = 0, row_ds = 0;
#pragma omp simd reduction(+ : row_da, row_ds)
    for (int64_t i = 0; i < d; ++i) {
      const A xv = A(x[i]), z = alpha * xv + shift;
      const A dz = A(g[i]) * w[i] * k0 * exp_of(-z * z);
      dx[i] = static_cast<T>(dz * alpha);
      row_da += dz * xv;
      row_ds += dz;
    }
    da += row_da;
    ds += row_ds;
  } else {
#pragma omp simd
    for (int64_t i = 0; i < d; ++i) {
      const A z = alpha * A(x[i]) + shift;
      dx[i] = static_cast<T>(A(g[i]) * w[i] * k0 * exp_of(-z * z) * alpha);
    }
  }
  if (dw != nullptr) {
#pragma omp simd
    for (int64_t i = 0; i < d; ++i) dw[i] += A(g[i]) * erf_of(alpha * A(x[i]) + shift);
  }
  if (db != nullptr) {
#pragma omp simd
    for (int64_t i = 0; i < d; ++i) db[i] += A(g[i]);
  }
}

Tensor derf_fwd(const Tensor& x, const Tensor& alpha, const Tensor& shift,
                const OptTensor& weight, const OptTensor& bias) {
  check_rows(x, "x");
  TORCH_CHECK(alpha.numel() == 1 && shift.numel() == 1, "alpha and shift must have one element");
  const int64_t m = n_rows(x), d = x.size(-1);
  const Tensor w = param_or(weight, x, 1.0), b = param_or(bias, x, 0.0);
  Tensor y = at::empty_like(x);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "derf_fwd", [&] {
    using A = std::conditional_t<std::is_same_v<scalar_t, double>, double, float>;
    const A a = alpha.item<A>(), sh = shift.item<A>();
    const scalar_t* xp = x.data_ptr<scalar_t>();
    scalar_t* yp = y.data_ptr<scalar_t>();
    const A *wp = w.data_ptr<A>(), *bp = b.data_ptr<A>();
    parallel_rows(m, d, [&](int64_t r) {
      derf_fwd_row(xp + r * d, a, sh, wp, bp, yp + r * d, d);
    });
  });
  return y;
}

std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor> derf_bwd(
    const Tensor& dy, const Tensor& x, const Tensor& alpha, const Tensor& shift,
    const OptTensor& weight, bool need_dalpha, bool need_dshift, bool need_dw, bool need_db) {
  check_rows(x, "x");
  check_rows(dy, "dy");
  TORCH_CHECK(dy.sizes() == x.sizes() && dy.scalar_type() == x.scalar_type(),
              "dy must match x in shape and dtype");
  TORCH_CHECK(alpha.numel() == 1 && shift.numel() == 1, "alpha and shift must have one element");
  const int64_t m = n_rows(x), d = x.size(-1);
  const Tensor w = param_or(weight, x, 1.0);
  const auto acc = x.options().dtype(acc_type(x));
  const int64_t chunks = n_chunks(m, d);
  const bool sums = need_dalpha || need_dshift;
  Tensor dx = at::empty_like(x);
  Tensor da_part = at::zeros({chunks}, acc), ds_part = at::zeros({chunks}, acc);
  Tensor dw_part = at::zeros({need_dw ? chunks : 0, d}, acc);
  Tensor db_part = at::zeros({need_db ? chunks : 0, d}, acc);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "derf_bwd", [&] {
    using A = std::conditional_t<std::is_same_v<scalar_t, double>, double, float>;
    const A a = alpha.item<A>(), sh = shift.item<A>();
    const scalar_t *gp = dy.data_ptr<scalar_t>(), *xp = x.data_ptr<scalar_t>();
    scalar_t* dxp = dx.data_ptr<scalar_t>();
    const A* wp = w.data_ptr<A>();
    at::parallel_for(0, chunks, 1, [&](int64_t c0, int64_t c1) {
      for (int64_t c = c0; c < c1; ++c) {
        A* dw = need_dw ? dw_part.data_ptr<A>() + c * d : nullptr;
        A* db = need_db ? db_part.data_ptr<A>() + c * d : nullptr;
        A da = 0, ds = 0;
        for (int64_t r = chunk_begin(c, chunks, m); r < chunk_begin(c + 1, chunks, m); ++r)
          derf_bwd_row(gp + r * d, xp + r * d, a, sh, wp, dxp + r * d, dw, db, sums, da, ds, d);
        da_part.data_ptr<A>()[c] = da;
        ds_part.data_ptr<A>()[c] = ds;
      }
    });
  });
  return {dx, da_part.sum(), ds_part.sum(), need_dw ? dw_part.sum(0) : dw_part.new_empty({0}),
          need_db ? db_part.sum(0) : db_part.new_empty({0})};
}

// ------------------------------------------------------------------------ gated, grouped RMSNorm
//
// Per group of n = group_size channels, with s = silu(z) = z·σ(z) and u the normalized input
// (x·s gate-first, x norm-first): x̂ = u·rstd, rstd = 1/sqrt(mean(u²) + eps),
//   gate first:  y = x̂·w              norm first:  y = x̂·w·s
// backward, with dn the gradient reaching x̂·w (g, or g·s norm-first):
//   du = rstd·(dn·w − x̂·mean(dn·w·x̂));  gate first: dx = du·s, dz = du·x·s'(z);
//   norm first: dx = du, dz = g·x̂·w·s'(z);  dw = Σ dn·x̂;   s'(z) = σ(z)·(1 + z·(1 − σ(z)))
// A group is staged in float buffers of n (u, s, ...), each loop one vectorizable pass.

template <typename A>
inline A sigmoid_of(A z) {
  return A(1) / (A(1) + exp_of(-z));
}

// Group g of the forward: u (and s) into the buffers, then y; returns rstd.
template <typename T, typename A>
A gated_fwd_group(const T* x, const T* z, const A* w, T* y, A* u, A* s, int64_t n, A eps,
                  bool norm_before_gate) {
  if (z != nullptr) {
#pragma omp simd
    for (int64_t i = 0; i < n; ++i) {
      const A zv = A(z[i]);
      s[i] = zv * sigmoid_of(zv);
      u[i] = norm_before_gate ? A(x[i]) : A(x[i]) * s[i];
    }
  } else {
#pragma omp simd
    for (int64_t i = 0; i < n; ++i) u[i] = A(x[i]);
  }
  const A rs = A(1) / std::sqrt(lane_sum<A>(n, [&](int64_t i) { return u[i] * u[i]; }) / A(n) +
                                eps);
  if (z != nullptr && norm_before_gate) {
#pragma omp simd
    for (int64_t i = 0; i < n; ++i) y[i] = static_cast<T>(u[i] * rs * w[i] * s[i]);
  } else {
#pragma omp simd
    for (int64_t i = 0; i < n; ++i) y[i] = static_cast<T>(u[i] * rs * w[i]);
  }
  return rs;
}

// Group g of the backward, see above; adds dn·x̂ to dw when given.
template <typename T, typename A>
void gated_bwd_group(const T* g, const T* x, const T* z, const A* w, A rs, T* dx, T* dz, A* dw,
                     A* xh, A* dn, A* s, A* sd, int64_t n, bool norm_before_gate) {
  if (z != nullptr) {
#pragma omp simd
    for (int64_t i = 0; i < n; ++i) {
      const A zv = A(z[i]), sig = sigmoid_of(zv);
      s[i] = zv * sig;
      sd[i] = sig * (A(1) + zv * (A(1) - sig));
      xh[i] = (norm_before_gate ? A(x[i]) : A(x[i]) * s[i]) * rs;
      dn[i] = norm_before_gate ? A(g[i]) * s[i] : A(g[i]);
    }
  } else {
#pragma omp simd
    for (int64_t i = 0; i < n; ++i) {
      xh[i] = A(x[i]) * rs;
      dn[i] = A(g[i]);
    }
  }
  const A c1 = lane_sum<A>(n, [&](int64_t i) { return dn[i] * w[i] * xh[i]; }) / A(n);
  if (z == nullptr) {
#pragma omp simd
    for (int64_t i = 0; i < n; ++i) dx[i] = static_cast<T>(rs * (dn[i] * w[i] - xh[i] * c1));
  } else if (norm_before_gate) {
#pragma omp simd
    for (int64_t i = 0; i < n; ++i) {
      dx[i] = static_cast<T>(rs * (dn[i] * w[i] - xh[i] * c1));
      dz[i] = static_cast<T>(A(g[i]) * xh[i] * w[i] * sd[i]);
    }
  } else {
#pragma omp simd
    for (int64_t i = 0; i < n; ++i) {
      const A du = rs * (dn[i] * w[i] - xh[i] * c1);
      dx[i] = static_cast<T>(du * s[i]);
      dz[i] = static_cast<T>(du * A(x[i]) * sd[i]);
    }
  }
  if (dw != nullptr) {
#pragma omp simd
    for (int64_t i = 0; i < n; ++i) dw[i] += dn[i] * xh[i];
  }
}

void check_gate(const OptTensor& gate, const Tensor& x) {
  if (!gate.has_value()) return;
  check_rows(*gate, "gate");
  TORCH_CHECK(gate->sizes() == x.sizes() && gate->scalar_type() == x.scalar_type(),
              "gate must match x in shape and dtype");
}

std::tuple<Tensor, Tensor> gated_fwd(const Tensor& x, const OptTensor& gate,
                                     const OptTensor& weight, double eps, int64_t group_size,
                                     bool norm_before_gate) {
  check_rows(x, "x");
  check_gate(gate, x);
  const int64_t m = n_rows(x), d = x.size(-1), n = group_size;
  TORCH_CHECK(n >= 1 && d % n == 0, "group_size must divide D");
  const int64_t groups = d / n;
  const Tensor w = param_or(weight, x, 1.0);
  Tensor y = at::empty_like(x);
  Tensor rstd = at::empty({m * groups}, x.options().dtype(acc_type(x)));
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "gated_fwd", [&] {
    using A = std::conditional_t<std::is_same_v<scalar_t, double>, double, float>;
    const scalar_t* xp = x.data_ptr<scalar_t>();
    const scalar_t* zp = gate.has_value() ? gate->data_ptr<scalar_t>() : nullptr;
    scalar_t* yp = y.data_ptr<scalar_t>();
    const A* wp = w.data_ptr<A>();
    A* rp = rstd.data_ptr<A>();
    at::parallel_for(0, m, grain_rows(d), [&](int64_t r0, int64_t r1) {
      std::vector<A> u(n), s(n);
      for (int64_t r = r0; r < r1; ++r) {
        for (int64_t g = 0; g < groups; ++g) {
          const int64_t off = r * d + g * n;
          rp[r * groups + g] = gated_fwd_group(xp + off, zp == nullptr ? nullptr : zp + off,
                                               wp + g * n, yp + off, u.data(), s.data(), n, A(eps),
                                               norm_before_gate);
        }
      }
    });
  });
  return {y, rstd};
}

std::tuple<Tensor, Tensor, Tensor> gated_bwd(const Tensor& dy, const Tensor& x,
                                             const OptTensor& gate, const OptTensor& weight,
                                             const Tensor& rstd, int64_t group_size,
                                             bool norm_before_gate, bool need_dw) {
  check_rows(x, "x");
  check_rows(dy, "dy");
  TORCH_CHECK(dy.sizes() == x.sizes() && dy.scalar_type() == x.scalar_type(),
              "dy must match x in shape and dtype");
  check_gate(gate, x);
  const int64_t m = n_rows(x), d = x.size(-1), n = group_size;
  TORCH_CHECK(n >= 1 && d % n == 0, "group_size must divide D");
  const int64_t groups = d / n;
  TORCH_CHECK(rstd.scalar_type() == acc_type(x) && rstd.numel() == m * groups,
              "rstd must have one entry per group of every row");
  const Tensor w = param_or(weight, x, 1.0);
  const auto acc = x.options().dtype(acc_type(x));
  const int64_t chunks = n_chunks(m, d);
  Tensor dx = at::empty_like(x);
  Tensor dz = gate.has_value() ? at::empty_like(x) : at::empty({0}, x.options());
  Tensor dw_part = at::zeros({need_dw ? chunks : 0, d}, acc);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "gated_bwd", [&] {
    using A = std::conditional_t<std::is_same_v<scalar_t, double>, double, float>;
    const scalar_t *gp = dy.data_ptr<scalar_t>(), *xp = x.data_ptr<scalar_t>();
    const scalar_t* zp = gate.has_value() ? gate->data_ptr<scalar_t>() : nullptr;
    scalar_t* dxp = dx.data_ptr<scalar_t>();
    scalar_t* dzp = gate.has_value() ? dz.data_ptr<scalar_t>() : nullptr;
    const A* wp = w.data_ptr<A>();
    const A* rp = rstd.data_ptr<A>();
    at::parallel_for(0, chunks, 1, [&](int64_t c0, int64_t c1) {
      std::vector<A> xh(n), dn(n), s(n), sd(n);
      for (int64_t c = c0; c < c1; ++c) {
        A* dw = need_dw ? dw_part.data_ptr<A>() + c * d : nullptr;
        for (int64_t r = chunk_begin(c, chunks, m); r < chunk_begin(c + 1, chunks, m); ++r) {
          for (int64_t g = 0; g < groups; ++g) {
            const int64_t off = r * d + g * n;
            gated_bwd_group(gp + off, xp + off, zp == nullptr ? nullptr : zp + off, wp + g * n,
                            rp[r * groups + g], dxp + off, dzp == nullptr ? nullptr : dzp + off,
                            dw == nullptr ? nullptr : dw + g * n, xh.data(), dn.data(), s.data(),
                            sd.data(), n, norm_before_gate);
          }
        }
      }
    });
  });
  return {dx, dz, need_dw ? dw_part.sum(0) : dw_part.new_empty({0})};
}

// ------------------------------------------------------------------------------------ autograd
//
// The autograd rules of norm_fwd and dyt_fwd, registered in C++ so that an eager call pays no
// Python. The rules are those of normlab/kernels/op_rules.py, which the Triton ops use: the
// backward asks the kernel only for the parameter gradients autograd needs, and returns them
// in the parameters' dtypes.

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

template <typename Signature>
c10::TypedOperatorHandle<Signature> op_handle(const char* name) {
  return c10::Dispatcher::singleton().findSchemaOrThrow(name, "").typed<Signature>();
}

OptTensor present(const Tensor& t) { return t.defined() ? OptTensor(t) : std::nullopt; }

int64_t dtype_code(const OptTensor& p) {
  return p.has_value() ? static_cast<int64_t>(p->scalar_type()) : -1;
}

at::ScalarType dtype_of(const AutogradContext* ctx, const char* key) {
  return static_cast<at::ScalarType>(ctx->saved_data.at(key).toInt());
}

// needs_input_grad(i) counts only the tensor arguments that were given. The forward records,
// for each tensor argument, its index among those (-1 when it was not given).
void record_given(AutogradContext* ctx, std::initializer_list<bool> given) {
  std::vector<int64_t> index;
  int64_t next = 0;
  for (const bool g : given) index.push_back(g ? next++ : -1);
  ctx->saved_data["given"] = index;
}

bool needs_grad(const AutogradContext* ctx, size_t argument) {
  const int64_t index = ctx->saved_data.at("given").toIntVector()[argument];
  return index >= 0 && ctx->needs_input_grad(index);
}

class NormFunction : public torch::autograd::Function<NormFunction> {
 public:
  static variable_list forward(AutogradContext* ctx, const Tensor& x, const OptTensor& residual,
                               const OptTensor& weight, const OptTensor& bias, double eps,
                               bool rms) {
    static const auto op = op_handle<decltype(norm_fwd)>("normlab_cpu::norm_fwd");
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    auto [y, h, mean, rstd] = op.call(x, residual, weight, bias, eps, rms);
    ctx->save_for_backward({residual.has_value() ? h : x, weight.value_or(Tensor()), mean, rstd});
    ctx->saved_data["rms"] = rms;
    ctx->saved_data["residual"] = residual.has_value();
    ctx->saved_data["bias_dtype"] = dtype_code(bias);
    record_given(ctx, {true, residual.has_value(), weight.has_value(), bias.has_value()});
    ctx->mark_non_differentiable({mean, rstd});
    return {y, h, mean, rstd};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    static const auto op = op_handle<decltype(norm_bwd)>("normlab_cpu::norm_bwd");
    const variable_list saved = ctx->get_saved_variables();
    const Tensor &x = saved[0], &weight = saved[1];
    const bool residual = ctx->saved_data.at("residual").toBool();
    const Tensor dy = grads[0].defined() ? grads[0].contiguous() : at::zeros_like(x);
    const OptTensor dh = residual && grads[1].defined() ? OptTensor(grads[1].contiguous())
                                                        : std::nullopt;
    const bool need_dw = needs_grad(ctx, 2), need_db = needs_grad(ctx, 3);
    auto [dx, dw, db] = op.call(dy, dh, x, present(weight), saved[2], saved[3], need_dw, need_db,
                                ctx->saved_data.at("rms").toBool());
    return {dx, residual ? dx : Tensor(), need_dw ? dw.to(weight.scalar_type()) : Tensor(),
            need_db ? db.to(dtype_of(ctx, "bias_dtype")) : Tensor(), Tensor(), Tensor()};
  }
};

class DytFunction : public torch::autograd::Function<DytFunction> {
 public:
  static Tensor forward(AutogradContext* ctx, const Tensor& x, const Tensor& alpha,
                        const OptTensor& weight, const OptTensor& bias) {
    static const auto op = op_handle<decltype(dyt_fwd)>("normlab_cpu::dyt_fwd");
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    Tensor y = op.call(x, alpha, weight, bias);
    ctx->save_for_backward({x, alpha, weight.value_or(Tensor())});
    ctx->saved_data["bias_dtype"] = dtype_code(bias);
    record_given(ctx, {true, true, weight.has_value(), bias.has_value()});
    return y;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    static const auto op = op_handle<decltype(dyt_bwd)>("normlab_cpu::dyt_bwd");
    const variable_list saved = ctx->get_saved_variables();
    const Tensor &x = saved[0], &alpha = saved[1], &weight = saved[2];
    const bool need_da = needs_grad(ctx, 1), need_dw = needs_grad(ctx, 2),
               need_db = needs_grad(ctx, 3);
    auto [dx, da, dw, db] = op.call(grads[0].contiguous(), x, alpha, present(weight), need_da,
                                    need_dw, need_db);
    return {dx, need_da ? da.reshape(alpha.sizes()).to(alpha.scalar_type()) : Tensor(),
            need_dw ? dw.to(weight.scalar_type()) : Tensor(),
            need_db ? db.to(dtype_of(ctx, "bias_dtype")) : Tensor()};
  }
};

std::tuple<Tensor, Tensor, Tensor, Tensor> norm_fwd_autograd(
    const Tensor& x, const OptTensor& residual, const OptTensor& weight, const OptTensor& bias,
    double eps, bool rms) {
  const variable_list out = NormFunction::apply(x, residual, weight, bias, eps, rms);
  return {out[0], out[1], out[2], out[3]};
}

Tensor dyt_fwd_autograd(const Tensor& x, const Tensor& alpha, const OptTensor& weight,
                        const OptTensor& bias) {
  return DytFunction::apply(x, alpha, weight, bias);
}

}  // namespace

TORCH_LIBRARY(normlab_cpu, m) {
  m.def("norm_fwd(Tensor x, Tensor? residual, Tensor? weight, Tensor? bias, float eps, bool rms)"
        " -> (Tensor, Tensor, Tensor, Tensor)");
  m.def("norm_bwd(Tensor dy, Tensor? dh, Tensor x, Tensor? weight, Tensor mean, Tensor rstd,"
        " bool need_dw, bool need_db, bool rms) -> (Tensor, Tensor, Tensor)");
  m.def("dyt_fwd(Tensor x, Tensor alpha, Tensor? weight, Tensor? bias) -> Tensor");
  m.def("dyt_bwd(Tensor dy, Tensor x, Tensor alpha, Tensor? weight, bool need_dalpha,"
        " bool need_dw, bool need_db)"
        " -> (Tensor, Tensor, Tensor, Tensor)");
  m.def("derf_fwd(Tensor x, Tensor alpha, Tensor shift, Tensor? weight, Tensor? bias) -> Tensor");
  m.def("derf_bwd(Tensor dy, Tensor x, Tensor alpha, Tensor shift, Tensor? weight,"
        " bool need_dalpha, bool need_dshift, bool need_dw, bool need_db)"
        " -> (Tensor, Tensor, Tensor, Tensor, Tensor)");
  m.def("gated_fwd(Tensor x, Tensor? gate, Tensor? weight, float eps, int group_size,"
        " bool norm_before_gate) -> (Tensor, Tensor)");
  m.def("gated_bwd(Tensor dy, Tensor x, Tensor? gate, Tensor? weight, Tensor rstd,"
        " int group_size, bool norm_before_gate, bool need_dw) -> (Tensor, Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(normlab_cpu, CPU, m) {
  m.impl("norm_fwd", &norm_fwd);
  m.impl("norm_bwd", &norm_bwd);
  m.impl("dyt_fwd", &dyt_fwd);
  m.impl("dyt_bwd", &dyt_bwd);
  m.impl("derf_fwd", &derf_fwd);
  m.impl("derf_bwd", &derf_bwd);
  m.impl("gated_fwd", &gated_fwd);
  m.impl("gated_bwd", &gated_bwd);
}

TORCH_LIBRARY_IMPL(normlab_cpu, Autograd, m) {
  m.impl("norm_fwd", &norm_fwd_autograd);
  m.impl("dyt_fwd", &dyt_fwd_autograd);
}
