// Implicit-GEMM 2-D convolution on tensor cores: out[m][n] = Σ_k A[m][k]·W[n][k]
// + bias[n] (+ res[m][n]), where m runs over output pixels of a channels-last
// image, n over output channels, and k = (r·S + s)·C + c over the filter taps;
// rows of A are gathered from x on the fly (no im2col buffer). Filters are
// KRSC (Cout, R, S, C). Needs C % 32 == 0 and Cout % 2 == 0.
//
// 256 threads (8 warps), tiles BM×BN×32, a STAGES-deep cp.async pipeline,
// mma.sync m16n8k16 with float32 accumulation.
#include "common.cuh"

__device__ __forceinline__ unsigned cv_smem(const void* p) { return (unsigned)__cvta_generic_to_shared(p); }

__device__ __forceinline__ void cp_async16(void* dst, const void* src, bool ok) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(cv_smem(dst)), "l"(src), "r"(ok ? 16 : 0));
}
__device__ __forceinline__ void cp_commit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int N> __device__ __forceinline__ void cp_wait() { asm volatile("cp.async.wait_group %0;\n" ::"n"(N)); }

__device__ __forceinline__ void cv_ldsm_x4(unsigned* r, const void* p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(cv_smem(p)));
}

template <typename T> __device__ __forceinline__ void cv_mma(float* c, const unsigned* a, const unsigned* b);
template <> __device__ __forceinline__ void cv_mma<f16>(float* c, const unsigned* a, const unsigned* b) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}
template <> __device__ __forceinline__ void cv_mma<bf16>(float* c, const unsigned* a, const unsigned* b) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}

template <typename T> struct Pair;
template <> struct Pair<f16> {
  typedef __half2 type;
  __device__ __forceinline__ static type make(float a, float b) { return __floats2half2_rn(a, b); }
  __device__ __forceinline__ static float2 get(type v) { return __half22float2(v); }
};
template <> struct Pair<bf16> {
  typedef __nv_bfloat162 type;
  __device__ __forceinline__ static type make(float a, float b) { return __floats2bfloat162_rn(a, b); }
  __device__ __forceinline__ static float2 get(type v) { return __bfloat1622float2(v); }
};

template <typename T, int BM, int BN, int WMW, int WNW, int STAGES>
__device__ __forceinline__ void conv_impl(void* pout, const void* px, const void* pw, const float* bias,
                                          const void* pres, int H, int W, int C, int Ho, int Wo, int M, int Cout,
                                          int S, int stride, int padt, int padl, int K) {
  constexpr int BK = 32, SR = BK + 8;
  constexpr int WTM = BM / WMW, WTN = BN / WNW, MT = WTM / 16, NT = WTN / 8;
  constexpr int AV = BM * 4 / 256, BV = BN * 4 / 256;  // 16-byte loads per thread per stage
  static_assert(WMW * WNW == 8, "8 warps");
  static_assert(NT % 2 == 0 && AV >= 1 && BV >= 1, "tile shape");
  extern __shared__ __align__(16) unsigned char smem_raw[];
  T* smem = reinterpret_cast<T*>(smem_raw);
  const T* x = (const T*)px;
  const T* w = (const T*)pw;
  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
  const int wm = warp / WNW, wn = warp % WNW;
  const int m0 = blockIdx.x * BM, n0 = blockIdx.y * BN;

  // Per-thread A rows: pixel coordinates, fixed over the k loop.
  int a_iy[AV], a_ix[AV], a_row[AV];
  const T* a_base[AV];
  bool a_ok[AV];
#pragma unroll
  for (int i = 0; i < AV; i++) {
    int idx = tid + i * 256;
    a_row[i] = idx >> 2;
    int m = m0 + a_row[i];
    a_ok[i] = m < M;
    int mm = a_ok[i] ? m : 0;
    int wo = mm % Wo, t = mm / Wo;
    int ho = t % Ho, b = t / Ho;
    a_iy[i] = ho * stride - padt;
    a_ix[i] = wo * stride - padl;
    a_base[i] = x + (size_t)b * H * W * C + (idx & 3) * 8;
  }
  const int KT = K / BK;

  auto load_stage = [&](int st, int kt) {
    T* As = smem + st * (BM + BN) * SR;
    T* Bs = As + BM * SR;
    int kb = kt * BK;
    int tap = kb / C, c0 = kb - tap * C;
    int r = tap / S, s = tap - r * S;
#pragma unroll
    for (int i = 0; i < AV; i++) {
      int iy = a_iy[i] + r, ix = a_ix[i] + s;
      bool ok = a_ok[i] && iy >= 0 && iy < H && ix >= 0 && ix < W;
      const T* src = ok ? a_base[i] + ((size_t)iy * W + ix) * C + c0 : x;
      cp_async16(As + a_row[i] * SR + ((tid + i * 256) & 3) * 8, src, ok);
    }
#pragma unroll
    for (int i = 0; i < BV; i++) {
      int idx = tid + i * 256;
      int row = idx >> 2, v = idx & 3;
      int n = n0 + row;
      bool ok = n < Cout;
      const T* src = ok ? w + (size_t)n * K + kb + v * 8 : w;
      cp_async16(Bs + row * SR + v * 8, src, ok);
    }
  };

  float acc[MT][NT][4];
#pragma unroll
  for (int i = 0; i < MT; i++)
#pragma unroll
    for (int j = 0; j < NT; j++) acc[i][j][0] = acc[i][j][1] = acc[i][j][2] = acc[i][j][3] = 0.f;

#pragma unroll
  for (int s = 0; s < STAGES - 1; s++) {
    if (s < KT) load_stage(s, s);
    cp_commit();
  }
  for (int kt = 0; kt < KT; kt++) {
    cp_wait<STAGES - 2>();
    __syncthreads();
    int nk = kt + STAGES - 1;
    if (nk < KT) load_stage(nk % STAGES, nk);
    cp_commit();
    const T* As = smem + (kt % STAGES) * (BM + BN) * SR;
    const T* Bs = As + BM * SR;
#pragma unroll
    for (int ks = 0; ks < 2; ks++) {
      unsigned af[MT][4], bfr[NT][2];
#pragma unroll
      for (int mt = 0; mt < MT; mt++) {
        int row = wm * WTM + mt * 16 + (lane & 7) + ((lane >> 3) & 1) * 8;
        int col = ks * 16 + (lane >> 4) * 8;
        cv_ldsm_x4(af[mt], As + row * SR + col);
      }
#pragma unroll
      for (int n2 = 0; n2 < NT / 2; n2++) {
        unsigned r4[4];
        int row = wn * WTN + n2 * 16 + (lane & 7) + (lane >> 4) * 8;
        int col = ks * 16 + ((lane >> 3) & 1) * 8;
        cv_ldsm_x4(r4, Bs + row * SR + col);
        bfr[2 * n2][0] = r4[0];
        bfr[2 * n2][1] = r4[1];
        bfr[2 * n2 + 1][0] = r4[2];
        bfr[2 * n2 + 1][1] = r4[3];
      }
#pragma unroll
      for (int mt = 0; mt < MT; mt++)
#pragma unroll
        for (int nt = 0; nt < NT; nt++) cv_mma<T>(acc[mt][nt], af[mt], bfr[nt]);
    }
  }
  cp_wait<0>();

  typedef typename Pair<T>::type P2;
  P2* out = (P2*)pout;
  const P2* res = (const P2*)pres;
  const int g = lane >> 2, t4 = lane & 3;
#pragma unroll
  for (int nt = 0; nt < NT; nt++) {
    int n = n0 + wn * WTN + nt * 8 + t4 * 2;
    if (n >= Cout) continue;
    float b0 = bias ? bias[n] : 0.f, b1 = bias ? bias[n + 1] : 0.f;
#pragma unroll
    for (int mt = 0; mt < MT; mt++) {
#pragma unroll
      for (int hf = 0; hf < 2; hf++) {
        int m = m0 + wm * WTM + mt * 16 + g + hf * 8;
        if (m >= M) continue;
        float v0 = acc[mt][nt][hf * 2] + b0, v1 = acc[mt][nt][hf * 2 + 1] + b1;
        size_t o = ((size_t)m * Cout + n) >> 1;
        if (res) {
          float2 r = Pair<T>::get(res[o]);
          v0 += r.x;
          v1 += r.y;
        }
        out[o] = Pair<T>::make(v0, v1);
      }
    }
  }
}

#define KILN_CONV(NAME, BM, BN, WMW, WNW, ST, TN, T)                                                                \
  extern "C" __global__ void __launch_bounds__(256) NAME##_##TN(                                                    \
      void* out, const void* x, const void* w, const float* bias, const void* res, int H, int W, int C, int Ho,     \
      int Wo, int M, int Cout, int S, int stride, int padt, int padl, int K) {                                      \
    conv_impl<T, BM, BN, WMW, WNW, ST>(out, x, w, bias, res, H, W, C, Ho, Wo, M, Cout, S, stride, padt, padl, K); \
  }
// conv_128x128: 3 stages, (128+128)·40·2·3 = 61440 bytes of dynamic shared memory.
KILN_CONV(conv_128x128, 128, 128, 2, 4, 3, f16, f16)
KILN_CONV(conv_128x128, 128, 128, 2, 4, 3, bf16, bf16)
// conv_128x64: 3 stages, (128+64)·40·2·3 = 46080 bytes.
KILN_CONV(conv_128x64, 128, 64, 4, 2, 3, f16, f16)
KILN_CONV(conv_128x64, 128, 64, 4, 2, 3, bf16, bf16)
// conv_64x64: 4 stages, (64+64)·40·2·4 = 40960 bytes.
KILN_CONV(conv_64x64, 64, 64, 2, 4, 4, f16, f16)
KILN_CONV(conv_64x64, 64, 64, 2, 4, 4, bf16, bf16)
