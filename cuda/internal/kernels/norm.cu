// Normalisation kernels: layer norm, group norm (one pass through shared
// memory where a block's groups fit, else three passes over a channels-last
// image) and the row softmax of the unfused attention path.
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

// layernorm_warp: one warp per row (8 rows per 256-thread block) with the
// row held in registers; needs d % Vec<T>::N == 0 and d ≤ 8·32·Vec<T>::N.
template <typename T>
__device__ __forceinline__ void layernorm_warp_impl(void* dst, const void* px, const float* w, const float* b,
                                                    int rows, int d, float eps) {
  constexpr int N = Vec<T>::N, MAXV = 8;
  int row = blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5), lane = threadIdx.x & 31;
  if (row >= rows) return;
  const T* x = (const T*)px + (size_t)row * d;
  T* y = (T*)dst + (size_t)row * d;
  float v[MAXV][N];
  float sum = 0.f;
#pragma unroll
  for (int j = 0; j < MAXV; j++) {
    int i = (j * 32 + lane) * N;
    if (i < d) {
      Vec<T>::load(x + i, v[j]);
#pragma unroll
      for (int e = 0; e < N; e++) sum += v[j][e];
    }
  }
  float mean = warp_sum(sum) / d;
  float q = 0.f;
#pragma unroll
  for (int j = 0; j < MAXV; j++) {
    int i = (j * 32 + lane) * N;
    if (i < d) {
#pragma unroll
      for (int e = 0; e < N; e++) {
        float t = v[j][e] - mean;
        q += t * t;
      }
    }
  }
  float rstd = rsqrtf(warp_sum(q) / d + eps);
#pragma unroll
  for (int j = 0; j < MAXV; j++) {
    int i = (j * 32 + lane) * N;
    if (i < d) {
      float wv[N], bv[N];
#pragma unroll
      for (int q = 0; q < N / 4; q++) {
        float4 a = w ? reinterpret_cast<const float4*>(w + i)[q] : make_float4(1.f, 1.f, 1.f, 1.f);
        float4 c = b ? reinterpret_cast<const float4*>(b + i)[q] : make_float4(0.f, 0.f, 0.f, 0.f);
        wv[4 * q] = a.x, wv[4 * q + 1] = a.y, wv[4 * q + 2] = a.z, wv[4 * q + 3] = a.w;
        bv[4 * q] = c.x, bv[4 * q + 1] = c.y, bv[4 * q + 2] = c.z, bv[4 * q + 3] = c.w;
      }
#pragma unroll
      for (int e = 0; e < N; e++) v[j][e] = (v[j][e] - mean) * rstd * wv[e] + bv[e];
      Vec<T>::store(y + i, v[j]);
    }
  }
}
KILN_EXPORT3(layernorm_warp, (void* dst, const void* x, const float* w, const float* b, int rows, int d, float eps),
             (dst, x, w, b, rows, d, eps))

// gn_sums: per (split s, batch b) block, per channel c, the sums of
// (x − k_c) and (x − k_c)² over the split's pixels, where the shift k_c =
// x[b][0][c] keeps the later variance free of cancellation. x is (batch,
// hw, c) channels-last; ws[((b·splits + s)·c + ch)·2 + {0,1}]. grid
// (splits, batch); shared memory 8·c bytes.
template <typename T>
__device__ __forceinline__ void gn_sums_impl(float* ws, const void* px, int hw, int c, int splits) {
  extern __shared__ __align__(16) unsigned char smem_raw[];
  float* acc = reinterpret_cast<float*>(smem_raw);  // [c][2]
  int s = blockIdx.x, b = blockIdx.y;
  const T* x = (const T*)px + (size_t)b * hw * c;
  int p0 = (int)((long long)hw * s / splits), p1 = (int)((long long)hw * (s + 1) / splits);
  for (int i = threadIdx.x; i < 2 * c; i += blockDim.x) acc[i] = 0.f;
  __syncthreads();
  constexpr int N = Vec<T>::N;
  if (c % N == 0 && c / N <= (int)blockDim.x) {
    int cv = c / N;               // vectors per pixel
    int lanes = blockDim.x / cv;  // pixels processed side by side
    int v = threadIdx.x % cv, lane = threadIdx.x / cv;
    if (lane < lanes) {
      float k[N], s1[N], s2[N], f[N], f2[N];
      Vec<T>::load(x + v * N, k);
#pragma unroll
      for (int j = 0; j < N; j++) s1[j] = s2[j] = 0.f;
      int p = p0 + lane;
      for (; p + lanes < p1; p += 2 * lanes) {  // two loads in flight
        Vec<T>::load(x + (size_t)p * c + v * N, f);
        Vec<T>::load(x + (size_t)(p + lanes) * c + v * N, f2);
#pragma unroll
        for (int j = 0; j < N; j++) {
          float t = f[j] - k[j], u = f2[j] - k[j];
          s1[j] += t + u;
          s2[j] += t * t + u * u;
        }
      }
      if (p < p1) {
        Vec<T>::load(x + (size_t)p * c + v * N, f);
#pragma unroll
        for (int j = 0; j < N; j++) {
          float t = f[j] - k[j];
          s1[j] += t;
          s2[j] += t * t;
        }
      }
#pragma unroll
      for (int j = 0; j < N; j++) {
        atomicAdd(&acc[(v * N + j) * 2], s1[j]);
        atomicAdd(&acc[(v * N + j) * 2 + 1], s2[j]);
      }
    }
  } else {
    for (int ch = threadIdx.x; ch < c; ch += blockDim.x) {
      float k = tof<T>(x[ch]), s1 = 0.f, s2 = 0.f;
      for (int p = p0; p < p1; p++) {
        float t = tof<T>(x[(size_t)p * c + ch]) - k;
        s1 += t;
        s2 += t * t;
      }
      acc[ch * 2] = s1;
      acc[ch * 2 + 1] = s2;
    }
  }
  __syncthreads();
  float* o = ws + ((size_t)b * splits + s) * c * 2;
  for (int i = threadIdx.x; i < 2 * c; i += blockDim.x) o[i] = acc[i];
}
KILN_EXPORT3(gn_sums, (float* ws, const void* x, int hw, int c, int splits), (ws, x, hw, c, splits))

// gn_affine: one thread per channel, blockDim.x = cpg·gpb (whole groups,
// gpb groups per block), grid (ceil(groups/gpb), batch). Each thread adds up
// its channel's partial sums over the splits; the group's mean and variance
// follow exactly from the channels' (equal-count) means and squared
// deviations; then ab[(b·c + ch)·2 + {0,1}] = (a, β) with y = x·a + β,
// a = rstd·w, β = bias − mean·a. w and bias may be null.
template <typename T>
__device__ __forceinline__ void gn_affine_impl(float* ab, const float* ws, const void* px, const float* w,
                                               const float* bias, int hw, int c, int groups, int splits, float eps) {
  __shared__ float st[1024][2];
  int b = blockIdx.y, cpg = c / groups, gpb = blockDim.x / cpg;
  int gi = threadIdx.x / cpg, g = blockIdx.x * gpb + gi;
  bool on = g < groups;
  int ch = g * cpg + threadIdx.x % cpg;
  float n = (float)hw;
  if (on) {
    const T* x = (const T*)px + (size_t)b * hw * c;
    float s1 = 0.f, s2 = 0.f, t1 = 0.f, t2 = 0.f;
    int s = 0;
    for (; s + 1 < splits; s += 2) {  // two independent loads in flight
      const float2 o = reinterpret_cast<const float2*>(ws)[((size_t)b * splits + s) * c + ch];
      const float2 u = reinterpret_cast<const float2*>(ws)[((size_t)b * splits + s + 1) * c + ch];
      s1 += o.x;
      s2 += o.y;
      t1 += u.x;
      t2 += u.y;
    }
    if (s < splits) {
      const float2 o = reinterpret_cast<const float2*>(ws)[((size_t)b * splits + s) * c + ch];
      s1 += o.x;
      s2 += o.y;
    }
    s1 += t1;
    s2 += t2;
    st[threadIdx.x][0] = tof<T>(x[ch]) + s1 / n;  // channel mean
    st[threadIdx.x][1] = s2 - s1 * s1 / n;        // channel sum of squared deviations
  }
  __syncthreads();
  if (!on) return;
  const float(*grp)[2] = st + gi * cpg;
  float gm = 0.f;
  for (int i = 0; i < cpg; i++) gm += grp[i][0];
  gm /= cpg;
  float m2 = 0.f;
  for (int i = 0; i < cpg; i++) {
    float d = grp[i][0] - gm;
    m2 += grp[i][1] + n * d * d;
  }
  float var = fmaxf(m2 / (n * cpg), 0.f);
  float rstd = rsqrtf(var + eps);
  float a = rstd * (w ? w[ch] : 1.f);
  ab[((size_t)b * c + ch) * 2] = a;
  ab[((size_t)b * c + ch) * 2 + 1] = (bias ? bias[ch] : 0.f) - gm * a;
}
KILN_EXPORT3(gn_affine,
             (float* ab, const float* ws, const void* x, const float* w, const float* bias, int hw, int c, int groups,
              int splits, float eps),
             (ab, ws, x, w, bias, hw, c, groups, splits, eps))

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

// gn_fused: group norm (+ SiLU) in one pass for images whose slab of a
// block's groups fits in shared memory. Block (i, b) owns gpb consecutive
// groups (gc = gpb·cpg channels from channel c0 = i·gc) of batch item b: it
// copies their (hw, gc) slab of the channels-last x into shared memory with
// cp.async (word bytes per copy: 16, 8, 4 or the element size, whatever the
// slab's row bytes and offset allow), takes each group's mean and then the
// squared deviations from it (two exact passes over shared memory), applies
// y = (x − mean)·rstd·w + bias (then SiLU) in place, and writes the slab
// back. So x is read once and y written once, against two reads for the
// three-pass path. Shared memory: hw·gc elements plus 4·gc + 2·gpb floats;
// needs gc ≤ blockDim.x.
__device__ __forceinline__ void cp_async_bytes(void* s, const void* g, int w) {
  unsigned sa = (unsigned)__cvta_generic_to_shared(s);
  if (w == 16)
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(sa), "l"(g));
  else if (w == 8)
    asm volatile("cp.async.ca.shared.global [%0], [%1], 8;\n" ::"r"(sa), "l"(g));
  else
    asm volatile("cp.async.ca.shared.global [%0], [%1], 4;\n" ::"r"(sa), "l"(g));
}

template <typename T>
__device__ __forceinline__ void gn_fused_impl(void* dst, const void* px, const float* w, const float* bias, int hw,
                                              int c, int cpg, int gpb, float eps, int silu_on) {
  extern __shared__ __align__(16) unsigned char smem_raw[];
  const int gc = cpg * gpb, b = blockIdx.y, c0 = blockIdx.x * gc;
  float* csum = reinterpret_cast<float*>(smem_raw);  // [gc] per-channel partial sums
  float* ca = csum + gc;                            // [gc] per-channel scale
  float* cb = ca + gc;                              // [gc] per-channel shift
  float* gmean = cb + gc;                           // [gpb]
  float* grstd = gmean + gpb;                       // [gpb]
  T* slab = reinterpret_cast<T*>(smem_raw + (((size_t)(3 * gc + 2 * gpb) * 4 + 15) & ~(size_t)15));
  const T* x = (const T*)px + (size_t)b * hw * c + c0;
  T* y = (T*)dst + (size_t)b * hw * c + c0;
  const int rowBytes = gc * (int)sizeof(T);
  const size_t off = (size_t)c0 * sizeof(T);
  const size_t stride = (size_t)c * sizeof(T);
  int wb = 16;
  const size_t base = (size_t)px | (size_t)dst;
  while (wb > 4 && (rowBytes % wb || off % wb || stride % wb || base % wb)) wb >>= 1;
  if (rowBytes % wb || off % wb || stride % wb || base % wb) wb = 2;  // element copies (T is 2 bytes here)
  const int words = rowBytes / wb, total = hw * words;
  if (wb >= 4) {
    for (int i = threadIdx.x; i < total; i += blockDim.x) {  // every copy in flight at once
      int p = i / words, k = i - p * words;
      cp_async_bytes(reinterpret_cast<unsigned char*>(slab) + (size_t)p * rowBytes + k * wb,
                     reinterpret_cast<const unsigned char*>(x + (size_t)p * c) + k * wb, wb);
    }
    asm volatile("cp.async.commit_group;\ncp.async.wait_group 0;\n" ::);
  } else {
    for (int i = threadIdx.x; i < hw * gc; i += blockDim.x) {
      int p = i / gc, k = i - p * gc;
      slab[i] = x[(size_t)p * c + k];
    }
  }
  for (int i = threadIdx.x; i < gc; i += blockDim.x) csum[i] = 0.f;
  __syncthreads();
  // Column mapping: thread t reads channel k = t % gc of rows t / gc,
  // t / gc + lanes, ... so that a warp reads consecutive elements.
  const int lanes = blockDim.x / gc, k = threadIdx.x % gc, r0 = threadIdx.x / gc;
  const bool on = r0 < lanes;
  float s = 0.f;
  if (on)
    for (int p = r0; p < hw; p += lanes) s += tof<T>(slab[(size_t)p * gc + k]);
  if (on) atomicAdd(&csum[k], s);
  __syncthreads();
  const float n = (float)hw * cpg;
  for (int g = threadIdx.x; g < gpb; g += blockDim.x) {
    float t = 0.f;
    for (int j = 0; j < cpg; j++) t += csum[g * cpg + j];
    gmean[g] = t / n;
  }
  __syncthreads();
  for (int i = threadIdx.x; i < gc; i += blockDim.x) csum[i] = 0.f;
  __syncthreads();
  if (on) {
    const float m = gmean[k / cpg];
    float q = 0.f;
    for (int p = r0; p < hw; p += lanes) {
      float d = tof<T>(slab[(size_t)p * gc + k]) - m;
      q += d * d;
    }
    atomicAdd(&csum[k], q);
  }
  __syncthreads();
  for (int g = threadIdx.x; g < gpb; g += blockDim.x) {
    float t = 0.f;
    for (int j = 0; j < cpg; j++) t += csum[g * cpg + j];
    grstd[g] = rsqrtf(t / n + eps);
  }
  __syncthreads();
  for (int i = threadIdx.x; i < gc; i += blockDim.x) {
    int g = i / cpg;
    float a = grstd[g] * (w ? w[c0 + i] : 1.f);
    ca[i] = a;
    cb[i] = (bias ? bias[c0 + i] : 0.f) - gmean[g] * a;
  }
  __syncthreads();
  if (on) {
    const float a = ca[k], sh = cb[k];
    for (int p = r0; p < hw; p += lanes) {
      float t = tof<T>(slab[(size_t)p * gc + k]) * a + sh;
      slab[(size_t)p * gc + k] = fromf<T>(silu_on ? silu(t) : t);
    }
  }
  __syncthreads();
  if (wb == 16) {
    for (int i = threadIdx.x; i < total; i += blockDim.x) {
      int p = i / words, kk = i - p * words;
      *reinterpret_cast<uint4*>(reinterpret_cast<unsigned char*>(y + (size_t)p * c) + kk * 16) =
          *reinterpret_cast<const uint4*>(reinterpret_cast<const unsigned char*>(slab) + (size_t)p * rowBytes + kk * 16);
    }
  } else if (wb == 8) {
    for (int i = threadIdx.x; i < total; i += blockDim.x) {
      int p = i / words, kk = i - p * words;
      *reinterpret_cast<uint2*>(reinterpret_cast<unsigned char*>(y + (size_t)p * c) + kk * 8) =
          *reinterpret_cast<const uint2*>(reinterpret_cast<const unsigned char*>(slab) + (size_t)p * rowBytes + kk * 8);
    }
  } else {
    for (int i = threadIdx.x; i < hw * gc; i += blockDim.x) {
      int p = i / gc, kk = i - p * gc;
      y[(size_t)p * c + kk] = slab[i];
    }
  }
}
KILN_EXPORT3(gn_fused,
             (void* dst, const void* x, const float* w, const float* bias, int hw, int c, int cpg, int gpb, float eps,
              int silu_on),
             (dst, x, w, bias, hw, c, cpg, gpb, eps, silu_on))

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
