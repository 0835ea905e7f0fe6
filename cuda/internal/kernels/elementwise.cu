// Elementwise, broadcast, layout and gather kernels. Sizes are element
// counts below 2^31 (the Go side checks); pointers to whole buffers are
// 256-byte aligned, which the 16-byte vector paths rely on.
#include "common.cuh"

// Indices are 32-bit unsigned: every tensor has fewer than 2^31 elements, so
// i + stride never wraps, and 32-bit division is far cheaper than 64-bit.
typedef unsigned int u32;
#define GRID_STRIDE(i, n) for (u32 i = blockIdx.x * blockDim.x + threadIdx.x; i < (u32)(n); i += gridDim.x * blockDim.x)

// convert: dst[i] = (D)src[i] between any two element types.
template <typename S, typename D>
__device__ __forceinline__ void convert_impl(void* dst, const void* src, u32 n) {
  const S* s = (const S*)src;
  D* d = (D*)dst;
  GRID_STRIDE(i, n) d[i] = fromf<D>(tof<S>(s[i]));
}
#define KILN_CONVERT(SN, S, DN, D) \
  extern "C" __global__ void convert_##SN##_##DN(void* dst, const void* src, u32 n) { convert_impl<S, D>(dst, src, n); }
KILN_CONVERT(f32, float, f16, f16)
KILN_CONVERT(f32, float, bf16, bf16)
KILN_CONVERT(f16, f16, f32, float)
KILN_CONVERT(bf16, bf16, f32, float)
KILN_CONVERT(f16, f16, bf16, bf16)
KILN_CONVERT(bf16, bf16, f16, f16)

// Unary op codes (the Go side names them).
#define OP_SCALE 0
#define OP_SILU 1
#define OP_GELU 2
#define OP_QUICKGELU 3

__device__ __forceinline__ float unary_op(float x, int op, float s) {
  switch (op) {
    case OP_SCALE: return x * s;
    case OP_SILU: return silu(x);
    case OP_GELU: return gelu_erf(x);
    default: return x / (1.f + __expf(-1.702f * x));
  }
}

// unary: dst[i] = f(src[i]) for f chosen by op (s is the scale of OP_SCALE).
template <typename T>
__device__ __forceinline__ void unary_impl(void* dst, const void* src, u32 n, int op, float s) {
  const T* x = (const T*)src;
  T* y = (T*)dst;
  constexpr int N = Vec<T>::N;
  u32 nv = n / N;
  GRID_STRIDE(i, nv) {
    float f[N];
    Vec<T>::load(x + i * N, f);
#pragma unroll
    for (int j = 0; j < N; j++) f[j] = unary_op(f[j], op, s);
    Vec<T>::store(y + i * N, f);
  }
  GRID_STRIDE(i, n - nv * N) {
    u32 k = nv * N + i;
    y[k] = fromf<T>(unary_op(tof<T>(x[k]), op, s));
  }
}
KILN_EXPORT3(unary, (void* dst, const void* src, u32 n, int op, float s), (dst, src, n, op, s))

// add: dst[i] = a[i] + b[i].
template <typename T>
__device__ __forceinline__ void add_impl(void* dst, const void* pa, const void* pb, u32 n) {
  const T* a = (const T*)pa;
  const T* b = (const T*)pb;
  T* y = (T*)dst;
  constexpr int N = Vec<T>::N;
  u32 nv = n / N;
  GRID_STRIDE(i, nv) {
    float fa[N], fb[N];
    Vec<T>::load(a + i * N, fa);
    Vec<T>::load(b + i * N, fb);
#pragma unroll
    for (int j = 0; j < N; j++) fa[j] += fb[j];
    Vec<T>::store(y + i * N, fa);
  }
  GRID_STRIDE(i, n - nv * N) {
    u32 k = nv * N + i;
    y[k] = fromf<T>(tof<T>(a[k]) + tof<T>(b[k]));
  }
}
KILN_EXPORT3(add, (void* dst, const void* a, const void* b, u32 n), (dst, a, b, n))

// add_bcast: dst[i] = x[i] + v[(i / od) * om + (i / idv) % imod], where v
// holds element type V (T or float). One form covers a vector over leading
// dimensions, over trailing dimensions and over (batch, channel) of a
// channels-last image.
template <typename T, typename V>
__device__ __forceinline__ void add_bcast_impl(void* dst, const void* px, const void* pv, u32 n, u32 od,
                                               u32 om, u32 idv, u32 imod) {
  const T* x = (const T*)px;
  const V* v = (const V*)pv;
  T* y = (T*)dst;
  GRID_STRIDE(i, n) {
    u32 k = (i / od) * om + (i / idv) % imod;
    y[i] = fromf<T>(tof<T>(x[i]) + tof<V>(v[k]));
  }
}
#define KILN_BCAST(TN, T, VN, V)                                                                              \
  extern "C" __global__ void add_bcast_##TN##_##VN(void* dst, const void* x, const void* v, u32 n,         \
                                                   u32 od, u32 om, u32 idv, u32 imod) { \
    add_bcast_impl<T, V>(dst, x, v, n, od, om, idv, imod);                                                    \
  }
KILN_BCAST(f32, float, f32, float)
KILN_BCAST(f16, f16, f16, f16)
KILN_BCAST(bf16, bf16, bf16, bf16)
KILN_BCAST(f16, f16, f32, float)
KILN_BCAST(bf16, bf16, f32, float)

// bias_act: dst[r][c] = act(x[r][c] + bias[c]) + res[r][c] over rows × cols;
// bias (float) and res may be null; act 0 none, 1 SiLU, 2 GELU.
// cols % Vec<T>::N == 0 uses vectors. dst may be x.
template <typename T>
__device__ __forceinline__ void bias_act_impl(void* dst, const void* px, const float* bias, const void* pres, u32 rows,
                                              int cols, int act) {
  const T* x = (const T*)px;
  const T* res = (const T*)pres;
  T* y = (T*)dst;
  constexpr int N = Vec<T>::N;
  u32 n = rows * cols;
  if (cols % N == 0) {
    GRID_STRIDE(i, n / N) {
      float f[N], r[N];
      Vec<T>::load(x + i * N, f);
      if (res) Vec<T>::load(res + i * N, r);
      int c0 = (int)((i * N) % cols);
#pragma unroll
      for (int j = 0; j < N; j++) {
        float t = f[j] + (bias ? bias[c0 + j] : 0.f);
        t = act == 1 ? silu(t) : act == 2 ? gelu_erf(t) : t;
        f[j] = res ? t + r[j] : t;
      }
      Vec<T>::store(y + i * N, f);
    }
  } else {
    GRID_STRIDE(i, n) {
      float t = tof<T>(x[i]) + (bias ? bias[i % cols] : 0.f);
      t = act == 1 ? silu(t) : act == 2 ? gelu_erf(t) : t;
      y[i] = fromf<T>(res ? t + tof<T>(res[i]) : t);
    }
  }
}
KILN_EXPORT3(bias_act, (void* dst, const void* x, const float* bias, const void* res, u32 rows, int cols, int act),
             (dst, x, bias, res, rows, cols, act))

// geglu: dst[r][j] = x[r][j] · GELU(x[r][h + j]) for x (rows, 2h).
template <typename T>
__device__ __forceinline__ void geglu_impl(void* dst, const void* px, u32 rows, int h) {
  const T* x = (const T*)px;
  T* y = (T*)dst;
  constexpr int N = Vec<T>::N;
  if (h % N == 0) {
    int hv = h / N;
    GRID_STRIDE(i, rows * hv) {
      u32 r = i / hv;
      int j = (int)(i % hv) * N;
      float a[N], g[N];
      Vec<T>::load(x + r * 2 * h + j, a);
      Vec<T>::load(x + r * 2 * h + h + j, g);
#pragma unroll
      for (int e = 0; e < N; e++) a[e] *= gelu_erf(g[e]);
      Vec<T>::store(y + r * h + j, a);
    }
  } else {
    GRID_STRIDE(i, rows * h) {
      u32 r = i / h;
      int j = (int)(i % h);
      y[i] = fromf<T>(tof<T>(x[r * 2 * h + j]) * gelu_erf(tof<T>(x[r * 2 * h + h + j])));
    }
  }
}
KILN_EXPORT3(geglu, (void* dst, const void* x, u32 rows, int h), (dst, x, rows, h))

// concat_c: channels-last concat, dst[p] = [a[p] (c1) | b[p] (c2)] for p < pixels.
template <typename T>
__device__ __forceinline__ void concat_c_impl(void* dst, const void* pa, const void* pb, u32 pixels, int c1, int c2) {
  const T* a = (const T*)pa;
  const T* b = (const T*)pb;
  T* y = (T*)dst;
  constexpr int N = Vec<T>::N;
  int c = c1 + c2;
  if (c1 % N == 0 && c2 % N == 0) {
    int cv = c / N;
    GRID_STRIDE(i, pixels * cv) {
      u32 p = i / cv;
      int j = (int)(i % cv) * N;
      const T* src = j < c1 ? a + p * c1 + j : b + p * c2 + (j - c1);
      *reinterpret_cast<uint4*>(y + p * c + j) = *reinterpret_cast<const uint4*>(src);
    }
  } else {
    GRID_STRIDE(i, pixels * c) {
      u32 p = i / c;
      int j = (int)(i % c);
      y[i] = j < c1 ? a[p * c1 + j] : b[p * c2 + (j - c1)];
    }
  }
}
KILN_EXPORT3(concat_c, (void* dst, const void* a, const void* b, u32 pixels, int c1, int c2),
             (dst, a, b, pixels, c1, c2))

// upsample2x: nearest 2x of a channels-last image (b, h, w, c) → (b, 2h, 2w, c).
template <typename T>
__device__ __forceinline__ void upsample2x_impl(void* dst, const void* psrc, int b, int h, int w, int c) {
  const T* x = (const T*)psrc;
  T* y = (T*)dst;
  constexpr int N = Vec<T>::N;
  int cv = c % N == 0 ? c / N : c;
  int step = c % N == 0 ? N : 1;
  u32 total = (u32)b * 2 * h * 2 * w * cv;
  GRID_STRIDE(i, total) {
    int j = (int)(i % cv) * step;
    u32 p = i / cv;
    int ox = (int)(p % (2 * w));
    u32 t = p / (2 * w);
    int oy = (int)(t % (2 * h));
    u32 bb = t / (2 * h);
    const T* s = x + (((bb * h) + oy / 2) * w + ox / 2) * c + j;
    T* d = y + p * c + j;
    if (step == N)
      *reinterpret_cast<uint4*>(d) = *reinterpret_cast<const uint4*>(s);
    else
      *d = *s;
  }
}
KILN_EXPORT3(upsample2x, (void* dst, const void* src, int b, int h, int w, int c), (dst, src, b, h, w, c))

// transpose: dst[k][c][r] = src[k][r][c] for src (batch, rows, cols), tiled
// through shared memory. grid (ceil(cols/32), ceil(rows/32), batch), block (32, 8).
template <typename T>
__device__ __forceinline__ void transpose_impl(void* dst, const void* psrc, int rows, int cols) {
  __shared__ T tile[32][33];
  const T* s = (const T*)psrc + (size_t)blockIdx.z * rows * cols;
  T* d = (T*)dst + (size_t)blockIdx.z * rows * cols;
  int c0 = blockIdx.x * 32, r0 = blockIdx.y * 32;
  for (int j = threadIdx.y; j < 32; j += 8) {
    int r = r0 + j, c = c0 + threadIdx.x;
    if (r < rows && c < cols) tile[j][threadIdx.x] = s[(u32)r * cols + c];
  }
  __syncthreads();
  for (int j = threadIdx.y; j < 32; j += 8) {
    int c = c0 + j, r = r0 + threadIdx.x;
    if (r < rows && c < cols) d[(u32)c * rows + r] = tile[threadIdx.x][j];
  }
}
KILN_EXPORT3(transpose, (void* dst, const void* src, int rows, int cols), (dst, src, rows, cols))

// embedding: dst[i] = table[ids[i]] (rows of d elements); ids are checked on the host.
template <typename T>
__device__ __forceinline__ void embedding_impl(void* dst, const void* ptable, const int* ids, int n, int d) {
  const T* t = (const T*)ptable;
  T* y = (T*)dst;
  GRID_STRIDE(i, (u32)n * d) {
    u32 r = i / d;
    int j = (int)(i % d);
    y[i] = t[(u32)ids[r] * d + j];
  }
}
KILN_EXPORT3(embedding, (void* dst, const void* table, const int* ids, int n, int d), (dst, table, ids, n, d))

// gather_rows: dst[b] = x[b][rows[b]] for x (batch, l, d).
template <typename T>
__device__ __forceinline__ void gather_rows_impl(void* dst, const void* px, const int* rows, int batch, int l, int d) {
  const T* x = (const T*)px;
  T* y = (T*)dst;
  GRID_STRIDE(i, (u32)batch * d) {
    int b = (int)(i / d), j = (int)(i % d);
    y[i] = x[((u32)b * l + rows[b]) * d + j];
  }
}
KILN_EXPORT3(gather_rows, (void* dst, const void* x, const int* rows, int batch, int l, int d), (dst, x, rows, batch, l, d))

// im2col: rows [row0, row0+nrows) of the patch matrix of a channels-last
// image x (b, h, w, c) for a kh×kw kernel: dst[m][(r·kw + s)·c + ch] =
// x[b][ho·stride − padT + r][wo·stride − padL + s][ch] (zero outside), with
// m = (b·ho_n + ho)·wo_n + wo.
template <typename T>
__device__ __forceinline__ void im2col_impl(void* dst, const void* px, int h, int w, int c, int ho_n, int wo_n, int kh,
                                            int kw, int stride, int padt, int padl, u32 row0, u32 nrows) {
  const T* x = (const T*)px;
  T* y = (T*)dst;
  constexpr int N = Vec<T>::N;
  int step = c % N == 0 ? N : 1;
  int cv = c / step;
  u32 k = (u32)kh * kw * c;
  GRID_STRIDE(i, nrows * kh * kw * cv) {
    int ch = (int)(i % cv) * step;
    u32 t = i / cv;
    int tap = (int)(t % (kh * kw));
    u32 lm = t / (kh * kw);
    u32 m = row0 + lm;
    int wo = (int)(m % wo_n);
    u32 t2 = m / wo_n;
    int ho = (int)(t2 % ho_n);
    u32 b = t2 / ho_n;
    int r = tap / kw, s = tap % kw;
    int iy = ho * stride - padt + r, ix = wo * stride - padl + s;
    T* d = y + lm * k + (u32)tap * c + ch;
    bool ok = iy >= 0 && iy < h && ix >= 0 && ix < w;
    const T* src = x + (((b * h) + iy) * w + ix) * c + ch;
    if (step == N) {
      uint4 u = make_uint4(0, 0, 0, 0);
      if (ok) u = *reinterpret_cast<const uint4*>(src);
      *reinterpret_cast<uint4*>(d) = u;
    } else {
      *d = ok ? *src : fromf<T>(0.f);
    }
  }
}
KILN_EXPORT3(im2col,
             (void* dst, const void* x, int h, int w, int c, int ho_n, int wo_n, int kh, int kw, int stride, int padt,
              int padl, u32 row0, u32 nrows),
             (dst, x, h, w, c, ho_n, wo_n, kh, kw, stride, padt, padl, row0, nrows))

// fill_random: dst[i] = uniform in [-scale, scale) from a hash of (seed, i),
// for measuring and cross-checking algorithms on non-trivial data.
__device__ __forceinline__ float hash_uniform(u32 seed, u32 i) {
  u32 h = i * 0x9E3779B1u ^ seed;
  h ^= h >> 16;
  h *= 0x85EBCA6Bu;
  h ^= h >> 13;
  h *= 0xC2B2AE35u;
  h ^= h >> 16;
  return (float)(h >> 8) * (1.f / 16777216.f) * 2.f - 1.f;
}
template <typename T>
__device__ __forceinline__ void fill_random_impl(void* dst, u32 n, u32 seed, float scale) {
  T* y = (T*)dst;
  GRID_STRIDE(i, n) y[i] = fromf<T>(hash_uniform(seed, i) * scale);
}
KILN_EXPORT3(fill_random, (void* dst, u32 n, u32 seed, float scale), (dst, n, seed, scale))

// max_diff: out[0] = max |a − b|, out[1] = max |b| over n elements (out
// zeroed before; non-negative floats compare as their bits).
template <typename T>
__device__ __forceinline__ void max_diff_impl(unsigned* out, const void* pa, const void* pb, u32 n) {
  const T* a = (const T*)pa;
  const T* b = (const T*)pb;
  float d = 0.f, m = 0.f;
  GRID_STRIDE(i, n) {
    float x = tof<T>(a[i]), y = tof<T>(b[i]);
    float e = fabsf(x - y);
    if (!(e <= 3.0e38f)) e = 3.0e38f;  // NaN and Inf count as huge
    d = fmaxf(d, e);
    m = fmaxf(m, fabsf(y));
  }
  d = warp_max(d);
  m = warp_max(m);
  if ((threadIdx.x & 31) == 0) {
    atomicMax(out, __float_as_uint(d));
    atomicMax(out + 1, __float_as_uint(m));
  }
}
KILN_EXPORT3(max_diff, (unsigned* out, const void* a, const void* b, u32 n), (out, a, b, n))
