// Normalisation kernels: layer norm, group norm (three passes over a
// channels-last image) and the row softmax of the unfused attention path.
// Statistics are accumulated in float32.
#include "common.cuh"

// layernorm: y[r] = (x[r] − mean)·rstd·w + b over rows of d elements; one
// block per row; w and b (float) may be null.
template <typename T>
__device__ __forceinline__ void layernorm_impl(void* dst, const void* px, const float* w, const float* b, int d,
                                               float eps) {
  __shared__ float scratch[32];
  const T* x = (const T*)px + (size_t)blockIdx.x * d;
  T* y = (T*)dst + (size_t)blockIdx.x * d;
  float s = 0.f;
  for (int i = threadIdx.x; i < d; i += blockDim.x) s += tof<T>(x[i]);
  float mean = block_sum(s, scratch) / d;
  float v = 0.f;
  for (int i = threadIdx.x; i < d; i += blockDim.x) {
    float t = tof<T>(x[i]) - mean;
    v += t * t;
  }
  float rstd = rsqrtf(block_sum(v, scratch) / d + eps);
  for (int i = threadIdx.x; i < d; i += blockDim.x) {
    float t = (tof<T>(x[i]) - mean) * rstd;
    if (w) t *= w[i];
    if (b) t += b[i];
    y[i] = fromf<T>(t);
  }
}
KILN_EXPORT3(layernorm, (void* dst, const void* x, const float* w, const float* b, int d, float eps),
             (dst, x, w, b, d, eps))

// gn_partial: per (split s, batch b) block, per channel c, the sums of
// (x − k_c) and (x − k_c)² over the split's pixels, where the shift k_c =
// x[b][0][c] keeps the later variance free of cancellation. x is (batch,
// hw, c) channels-last; ws[((b·splits + s)·c + ch)·2 + {0,1}].
// grid (splits, batch).
template <typename T>
__device__ __forceinline__ void gn_partial_impl(float* ws, const void* px, int hw, int c, int splits) {
  int s = blockIdx.x, b = blockIdx.y;
  const T* x = (const T*)px + (size_t)b * hw * c;
  int p0 = (int)((long long)hw * s / splits), p1 = (int)((long long)hw * (s + 1) / splits);
  for (int ch = threadIdx.x; ch < c; ch += blockDim.x) {
    float k = tof<T>(x[ch]);
    float s1[4] = {0.f, 0.f, 0.f, 0.f}, s2[4] = {0.f, 0.f, 0.f, 0.f};
    int p = p0;
    for (; p + 3 < p1; p += 4) {
#pragma unroll
      for (int u = 0; u < 4; u++) {
        float t = tof<T>(x[(size_t)(p + u) * c + ch]) - k;
        s1[u] += t;
        s2[u] += t * t;
      }
    }
    for (; p < p1; p++) {
      float t = tof<T>(x[(size_t)p * c + ch]) - k;
      s1[0] += t;
      s2[0] += t * t;
    }
    float* o = ws + (((size_t)b * splits + s) * c + ch) * 2;
    o[0] = (s1[0] + s1[1]) + (s1[2] + s1[3]);
    o[1] = (s2[0] + s2[1]) + (s2[2] + s2[3]);
  }
}
KILN_EXPORT3(gn_partial, (float* ws, const void* x, int hw, int c, int splits), (ws, x, hw, c, splits))

// gn_finalize: one warp per (batch b, group g), blockDim.x == 32: combines
// the partial sums into the group's mean and variance and writes per channel
// the affine ab[(b·c + ch)·2 + {0,1}] = (a, β) with y = x·a + β, a = rstd·w,
// β = bias − mean·a. w and bias may be null.
template <typename T>
__device__ __forceinline__ void gn_finalize_impl(float* ab, const float* ws, const void* px, const float* w,
                                                 const float* bias, int batch, int hw, int c, int groups, int splits,
                                                 float eps) {
  int t = blockIdx.x;
  if (t >= batch * groups) return;
  int b = t / groups, g = t % groups, lane = threadIdx.x;
  int cpg = c / groups;
  const T* x = (const T*)px + (size_t)b * hw * c;
  float n = (float)hw;
  // per channel: mean offset s1/n and m2 = s2 − s1²/n, reduced over splits by the warp
  double gmean = 0.0, m2 = 0.0;
  for (int i = 0; i < cpg; i++) {
    int ch = g * cpg + i;
    float s1 = 0.f, s2 = 0.f;
    for (int s = lane; s < splits; s += 32) {
      const float* o = ws + (((size_t)b * splits + s) * c + ch) * 2;
      s1 += o[0];
      s2 += o[1];
    }
    s1 = warp_sum(s1);
    s2 = warp_sum(s2);
    // Welford-style merge of channel i (mean cm, m2 ci) into the group
    double cm = (double)tof<T>(x[ch]) + (double)s1 / n;
    double ci = (double)s2 - (double)s1 * (double)s1 / n;
    if (i == 0) {
      gmean = cm;
      m2 = ci;
    } else {
      double na = (double)i * n, nb = n;
      double d = cm - gmean;
      gmean += d * nb / (na + nb);
      m2 += ci + d * d * na * nb / (na + nb);
    }
  }
  double var = m2 / ((double)n * cpg);
  if (var < 0) var = 0;
  float rstd = (float)(1.0 / sqrt(var + (double)eps));
  for (int i = lane; i < cpg; i += 32) {
    int ch = g * cpg + i;
    float a = rstd * (w ? w[ch] : 1.f);
    ab[((size_t)b * c + ch) * 2] = a;
    ab[((size_t)b * c + ch) * 2 + 1] = (bias ? bias[ch] : 0.f) - (float)gmean * a;
  }
}
KILN_EXPORT3(gn_finalize,
             (float* ab, const float* ws, const void* x, const float* w, const float* bias, int batch, int hw, int c,
              int groups, int splits, float eps),
             (ab, ws, x, w, bias, batch, hw, c, groups, splits, eps))

// gn_apply: y = x·a + β per (batch, channel) from gn_finalize, then SiLU when
// silu is set; x channels-last (batch, hw, c).
template <typename T>
__device__ __forceinline__ void gn_apply_impl(void* dst, const void* px, const float* ab, int batch, int hw, int c,
                                              int silu_on) {
  const T* x = (const T*)px;
  T* y = (T*)dst;
  constexpr int N = Vec<T>::N;
  unsigned n = (unsigned)batch * hw * c;
  unsigned per = (unsigned)hw * c;
  if (c % N == 0) {
    for (unsigned i = blockIdx.x * blockDim.x + threadIdx.x; i < n / N; i += gridDim.x * blockDim.x) {
      unsigned e = i * N;
      unsigned b = e / per, ch = e % c;
      const float2* p = reinterpret_cast<const float2*>(ab) + (size_t)b * c + ch;
      float f[N];
      Vec<T>::load(x + e, f);
#pragma unroll
      for (int j = 0; j < N; j++) {
        float2 q = p[j];
        float t = f[j] * q.x + q.y;
        f[j] = silu_on ? silu(t) : t;
      }
      Vec<T>::store(y + e, f);
    }
  } else {
    for (unsigned i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) {
      unsigned b = i / per, ch = i % c;
      float2 q = reinterpret_cast<const float2*>(ab)[(size_t)b * c + ch];
      float t = tof<T>(x[i]) * q.x + q.y;
      y[i] = fromf<T>(silu_on ? silu(t) : t);
    }
  }
}
KILN_EXPORT3(gn_apply, (void* dst, const void* x, const float* ab, int batch, int hw, int c, int silu_on),
             (dst, x, ab, batch, hw, c, silu_on))

// softmax_rows: P[r] = softmax(S[r]) for float scores S (rows, cols), written
// as T. With causal set, row r is query q0 + r % qrows and keys after it are
// masked. One block per row.
template <typename T>
__device__ __forceinline__ void softmax_rows_impl(void* dst, const float* src, int cols, int causal, int q0,
                                                  int qrows) {
  __shared__ float scratch[32];
  const float* s = src + (size_t)blockIdx.x * cols;
  T* y = (T*)dst + (size_t)blockIdx.x * cols;
  int lim = cols;
  if (causal) {
    int q = q0 + (int)(blockIdx.x % qrows);
    lim = min(cols, q + 1);
  }
  float m = -INFINITY;
  for (int i = threadIdx.x; i < lim; i += blockDim.x) m = fmaxf(m, s[i]);
  m = block_max(m, scratch);
  float sum = 0.f;
  for (int i = threadIdx.x; i < lim; i += blockDim.x) sum += __expf(s[i] - m);
  sum = block_sum(sum, scratch);
  float inv = 1.f / sum;
  for (int i = threadIdx.x; i < cols; i += blockDim.x) y[i] = fromf<T>(i < lim ? __expf(s[i] - m) * inv : 0.f);
}
KILN_EXPORT3(softmax_rows, (void* dst, const float* src, int cols, int causal, int q0, int qrows),
             (dst, src, cols, causal, q0, qrows))
