// Fused attention (flash-attention style): softmax(scale·q·kᵀ)·v computed
// tile by tile with an online softmax, so no score matrix ever reaches device
// memory. fp16/bf16 tensor cores (mma.sync m16n8k16) with float32
// accumulation and float32 softmax statistics.
//
// Layout: q (B, Lq, ·), k and v (B, Lk, ·), out (B, Lq, ·) with head h at
// columns [h·D, (h+1)·D) and row strides ldq, ldk, ldv, ldo (elements).
// D % 8 == 0 and D ≤ DP, DP % 16 == 0. grid (ceil(Lq/64), H, B), 128 threads:
// each of the 4 warps owns 16 query rows.
#include "common.cuh"
#include <type_traits>

__device__ __forceinline__ unsigned smem_addr(const void* p) { return (unsigned)__cvta_generic_to_shared(p); }

__device__ __forceinline__ void ldsm_x4(unsigned& r0, unsigned& r1, unsigned& r2, unsigned& r3, const void* p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r0), "=r"(r1), "=r"(r2), "=r"(r3)
               : "r"(smem_addr(p)));
}

__device__ __forceinline__ void ldsm_x4_t(unsigned& r0, unsigned& r1, unsigned& r2, unsigned& r3, const void* p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r0), "=r"(r1), "=r"(r2), "=r"(r3)
               : "r"(smem_addr(p)));
}

template <typename T> struct Mma;
template <> struct Mma<f16> {
  __device__ __forceinline__ static void run(float* c, const unsigned* a, unsigned b0, unsigned b1) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
        "{%0,%1,%2,%3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
  }
  __device__ __forceinline__ static unsigned pack(float lo, float hi) {
    __half2 h = __floats2half2_rn(lo, hi);
    return *reinterpret_cast<unsigned*>(&h);
  }
};
template <> struct Mma<bf16> {
  __device__ __forceinline__ static void run(float* c, const unsigned* a, unsigned b0, unsigned b1) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
        "{%0,%1,%2,%3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
  }
  __device__ __forceinline__ static unsigned pack(float lo, float hi) {
    __nv_bfloat162 h = __floats2bfloat162_rn(lo, hi);
    return *reinterpret_cast<unsigned*>(&h);
  }
};

// load_tile copies rows [r0, r0+ROWS) of one head (D columns at col0) into
// shared memory of row stride DP+8, zero-filling rows ≥ nrows and columns ≥ D.
template <typename T, int ROWS, int DP>
__device__ __forceinline__ void load_tile(T* sm, const T* g, int ld, int r0, int nrows, int D) {
  constexpr int CV = DP / 8;
  for (int idx = threadIdx.x; idx < ROWS * CV; idx += blockDim.x) {
    int r = idx / CV, cv = idx % CV;
    uint4 u = make_uint4(0, 0, 0, 0);
    if (r0 + r < nrows && cv * 8 < D) u = *reinterpret_cast<const uint4*>(g + (size_t)(r0 + r) * ld + cv * 8);
    *reinterpret_cast<uint4*>(sm + r * (DP + 8) + cv * 8) = u;
  }
}

template <typename T, int DP>
__device__ __forceinline__ void flash_impl(void* pout, const void* pq, const void* pk, const void* pv, int Lq, int Lk,
                                           int D, int ldq, int ldk, int ldv, int ldo, float scale_log2, int causal) {
  constexpr int BM = 64, BN = 64, SR = DP + 8;
  extern __shared__ __align__(16) unsigned char smem_raw[];
  T* sa = reinterpret_cast<T*>(smem_raw);  // Q, then K tiles
  T* sv = sa + BM * SR;                    // V tiles
  const int b = blockIdx.z, h = blockIdx.y, q0 = blockIdx.x * BM;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int g = lane >> 2, t4 = lane & 3;
  const T* q = (const T*)pq + (size_t)b * Lq * ldq + (size_t)h * D;
  const T* k = (const T*)pk + (size_t)b * Lk * ldk + (size_t)h * D;
  const T* v = (const T*)pv + (size_t)b * Lk * ldv + (size_t)h * D;
  T* out = (T*)pout + (size_t)b * Lq * ldo + (size_t)h * D;

  load_tile<T, BM, DP>(sa, q, ldq, q0, Lq, D);
  __syncthreads();
  unsigned qf[DP / 16][4];
#pragma unroll
  for (int kk = 0; kk < DP / 16; kk++) {
    int row = warp * 16 + (lane & 7) + ((lane >> 3) & 1) * 8;
    int col = kk * 16 + (lane >> 4) * 8;
    ldsm_x4(qf[kk][0], qf[kk][1], qf[kk][2], qf[kk][3], sa + row * SR + col);
  }
  __syncthreads();

  float o[DP / 8][4];
#pragma unroll
  for (int i = 0; i < DP / 8; i++) o[i][0] = o[i][1] = o[i][2] = o[i][3] = 0.f;
  float m0 = -INFINITY, m1 = -INFINITY, l0 = 0.f, l1 = 0.f;
  const int row0 = q0 + warp * 16 + g, row1 = row0 + 8;
  int kv_end = Lk;
  if (causal) kv_end = min(Lk, q0 + BM);

  for (int kv0 = 0; kv0 < kv_end; kv0 += BN) {
    load_tile<T, BN, DP>(sa, k, ldk, kv0, Lk, D);
    load_tile<T, BN, DP>(sv, v, ldv, kv0, Lk, D);
    __syncthreads();
    float s[BN / 8][4];
#pragma unroll
    for (int i = 0; i < BN / 8; i++) s[i][0] = s[i][1] = s[i][2] = s[i][3] = 0.f;
#pragma unroll
    for (int kk = 0; kk < DP / 16; kk++) {
#pragma unroll
      for (int n2 = 0; n2 < BN / 16; n2++) {
        unsigned b0, b1, b2, b3;
        int row = n2 * 16 + (lane & 7) + (lane >> 4) * 8;
        int col = kk * 16 + ((lane >> 3) & 1) * 8;
        ldsm_x4(b0, b1, b2, b3, sa + row * SR + col);
        Mma<T>::run(s[2 * n2], qf[kk], b0, b1);
        Mma<T>::run(s[2 * n2 + 1], qf[kk], b2, b3);
      }
    }
    // scale, mask and the online softmax update (rows row0: e 0,1; row1: e 2,3)
    float mx0 = -INFINITY, mx1 = -INFINITY;
#pragma unroll
    for (int nt = 0; nt < BN / 8; nt++) {
#pragma unroll
      for (int e = 0; e < 4; e++) {
        int j = kv0 + nt * 8 + t4 * 2 + (e & 1);
        int r = e < 2 ? row0 : row1;
        float val = s[nt][e] * scale_log2;
        if (j >= Lk || (causal && j > r)) val = -INFINITY;
        s[nt][e] = val;
      }
      mx0 = fmaxf(mx0, fmaxf(s[nt][0], s[nt][1]));
      mx1 = fmaxf(mx1, fmaxf(s[nt][2], s[nt][3]));
    }
    mx0 = fmaxf(mx0, __shfl_xor_sync(0xffffffffu, mx0, 1));
    mx0 = fmaxf(mx0, __shfl_xor_sync(0xffffffffu, mx0, 2));
    mx1 = fmaxf(mx1, __shfl_xor_sync(0xffffffffu, mx1, 1));
    mx1 = fmaxf(mx1, __shfl_xor_sync(0xffffffffu, mx1, 2));
    float mn0 = fmaxf(m0, mx0), mn1 = fmaxf(m1, mx1);
    float base0 = mn0 == -INFINITY ? 0.f : mn0, base1 = mn1 == -INFINITY ? 0.f : mn1;
    float al0 = exp2f(m0 - base0), al1 = exp2f(m1 - base1);
    m0 = mn0;
    m1 = mn1;
    float rs0 = 0.f, rs1 = 0.f;
#pragma unroll
    for (int nt = 0; nt < BN / 8; nt++) {
      s[nt][0] = exp2f(s[nt][0] - base0);
      s[nt][1] = exp2f(s[nt][1] - base0);
      s[nt][2] = exp2f(s[nt][2] - base1);
      s[nt][3] = exp2f(s[nt][3] - base1);
      rs0 += s[nt][0] + s[nt][1];
      rs1 += s[nt][2] + s[nt][3];
    }
    l0 = l0 * al0 + rs0;
    l1 = l1 * al1 + rs1;
#pragma unroll
    for (int i = 0; i < DP / 8; i++) {
      o[i][0] *= al0;
      o[i][1] *= al0;
      o[i][2] *= al1;
      o[i][3] *= al1;
    }
#pragma unroll
    for (int kk = 0; kk < BN / 16; kk++) {
      unsigned a[4];
      a[0] = Mma<T>::pack(s[2 * kk][0], s[2 * kk][1]);
      a[1] = Mma<T>::pack(s[2 * kk][2], s[2 * kk][3]);
      a[2] = Mma<T>::pack(s[2 * kk + 1][0], s[2 * kk + 1][1]);
      a[3] = Mma<T>::pack(s[2 * kk + 1][2], s[2 * kk + 1][3]);
#pragma unroll
      for (int d2 = 0; d2 < DP / 16; d2++) {
        unsigned b0, b1, b2, b3;
        int row = kk * 16 + (lane & 7) + ((lane >> 3) & 1) * 8;
        int col = d2 * 16 + (lane >> 4) * 8;
        ldsm_x4_t(b0, b1, b2, b3, sv + row * SR + col);
        Mma<T>::run(o[2 * d2], a, b0, b1);
        Mma<T>::run(o[2 * d2 + 1], a, b2, b3);
      }
    }
    __syncthreads();
  }
  l0 += __shfl_xor_sync(0xffffffffu, l0, 1);
  l0 += __shfl_xor_sync(0xffffffffu, l0, 2);
  l1 += __shfl_xor_sync(0xffffffffu, l1, 1);
  l1 += __shfl_xor_sync(0xffffffffu, l1, 2);
  float inv0 = l0 > 0.f ? 1.f / l0 : 0.f, inv1 = l1 > 0.f ? 1.f / l1 : 0.f;
#pragma unroll
  for (int nt = 0; nt < DP / 8; nt++) {
    int d = nt * 8 + t4 * 2;
    if (d < D) {
      if (row0 < Lq) {
        T* p = out + (size_t)row0 * ldo + d;
        p[0] = fromf<T>(o[nt][0] * inv0);
        p[1] = fromf<T>(o[nt][1] * inv0);
      }
      if (row1 < Lq) {
        T* p = out + (size_t)row1 * ldo + d;
        p[0] = fromf<T>(o[nt][2] * inv1);
        p[1] = fromf<T>(o[nt][3] * inv1);
      }
    }
  }
}

__device__ __forceinline__ void fa_cp_async16(void* dst, const void* src, bool ok) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(smem_addr(dst)), "l"(src), "r"(ok ? 16 : 0));
}
__device__ __forceinline__ void fa_commit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int N> __device__ __forceinline__ void fa_wait() { asm volatile("cp.async.wait_group %0;\n" ::"n"(N)); }

// async_tile starts copying rows [r0, r0+ROWS) of one head into shared
// memory (row stride DP+8), zero-filling rows ≥ nrows and columns ≥ D.
template <typename T, int ROWS, int DP>
__device__ __forceinline__ void async_tile(T* sm, const T* g, int ld, int r0, int nrows, int D) {
  constexpr int CV = DP / 8;
  for (int idx = threadIdx.x; idx < ROWS * CV; idx += blockDim.x) {
    int r = idx / CV, cv = idx % CV;
    bool ok = r0 + r < nrows && cv * 8 < D;
    fa_cp_async16(sm + r * (DP + 8) + cv * 8, ok ? g + (size_t)(r0 + r) * ld + cv * 8 : g, ok);
  }
}

// flashp_impl is flash_impl with K/V tiles double-buffered through
// cp.async (the next tile streams in while this one is computed), and each
// warp owning MT row tiles of 16 queries, so that every K/V fragment it
// reads from shared memory feeds MT products. Shared memory: Q (64·MT rows)
// + 2 × (K + V) (64 rows each) of DP+8 elements.
template <typename T, int DP, int MT>
__device__ __forceinline__ void flashp_impl(void* pout, const void* pq, const void* pk, const void* pv, int Lq, int Lk,
                                            int D, int ldq, int ldk, int ldv, int ldo, float scale_log2, int causal) {
  constexpr int BM = 64 * MT, BN = 64, SR = DP + 8;
  extern __shared__ __align__(16) unsigned char smem_raw[];
  T* sq = reinterpret_cast<T*>(smem_raw);
  T* sk = sq + BM * SR;      // 2 stages of BN rows
  T* sv = sk + 2 * BN * SR;  // 2 stages of BN rows
  const int b = blockIdx.z, h = blockIdx.y, q0 = blockIdx.x * BM;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int g = lane >> 2, t4 = lane & 3;
  const T* q = (const T*)pq + (size_t)b * Lq * ldq + (size_t)h * D;
  const T* k = (const T*)pk + (size_t)b * Lk * ldk + (size_t)h * D;
  const T* v = (const T*)pv + (size_t)b * Lk * ldv + (size_t)h * D;
  T* out = (T*)pout + (size_t)b * Lq * ldo + (size_t)h * D;
  int kv_end = Lk;
  if (causal) kv_end = min(Lk, q0 + BM);
  const int ntiles = (kv_end + BN - 1) / BN;

  async_tile<T, BM, DP>(sq, q, ldq, q0, Lq, D);
  async_tile<T, BN, DP>(sk, k, ldk, 0, Lk, D);
  async_tile<T, BN, DP>(sv, v, ldv, 0, Lk, D);
  fa_commit();
  fa_wait<0>();
  __syncthreads();
  unsigned qf[MT][DP / 16][4];
#pragma unroll
  for (int mt = 0; mt < MT; mt++)
#pragma unroll
    for (int kk = 0; kk < DP / 16; kk++) {
      int row = (warp * MT + mt) * 16 + (lane & 7) + ((lane >> 3) & 1) * 8;
      int col = kk * 16 + (lane >> 4) * 8;
      ldsm_x4(qf[mt][kk][0], qf[mt][kk][1], qf[mt][kk][2], qf[mt][kk][3], sq + row * SR + col);
    }

  float o[MT][DP / 8][4];
  float m0[MT], m1[MT], l0[MT], l1[MT];
  int row0[MT], row1[MT];
#pragma unroll
  for (int mt = 0; mt < MT; mt++) {
#pragma unroll
    for (int i = 0; i < DP / 8; i++) o[mt][i][0] = o[mt][i][1] = o[mt][i][2] = o[mt][i][3] = 0.f;
    m0[mt] = m1[mt] = -INFINITY;
    l0[mt] = l1[mt] = 0.f;
    row0[mt] = q0 + (warp * MT + mt) * 16 + g;
    row1[mt] = row0[mt] + 8;
  }

  // With D < DP the first padded column of V can carry ones, so that the
  // P·V product also yields the softmax row sums (fp16 only: there the
  // exponentials are summed nowhere else).
  const bool ones = std::is_same<T, f16>::value && D < DP;
  const int nd = D / 8;
  const unsigned one2 = std::is_same<T, f16>::value ? 0x3C003C00u : 0x3F803F80u;
  for (int j = 0; j < ntiles; j++) {
    const int kv0 = j * BN;
    if (j + 1 < ntiles) {
      int st = (j + 1) & 1;
      async_tile<T, BN, DP>(sk + st * BN * SR, k, ldk, kv0 + BN, Lk, D);
      async_tile<T, BN, DP>(sv + st * BN * SR, v, ldv, kv0 + BN, Lk, D);
    }
    fa_commit();
    fa_wait<1>();
    __syncthreads();
    const T* ks = sk + (j & 1) * BN * SR;
    const T* vs = sv + (j & 1) * BN * SR;
    float s[MT][BN / 8][4];
#pragma unroll
    for (int mt = 0; mt < MT; mt++)
#pragma unroll
      for (int i = 0; i < BN / 8; i++) s[mt][i][0] = s[mt][i][1] = s[mt][i][2] = s[mt][i][3] = 0.f;
#pragma unroll
    for (int kk = 0; kk < DP / 16; kk++) {
#pragma unroll
      for (int n2 = 0; n2 < BN / 16; n2++) {
        unsigned b0, b1, b2, b3;
        int row = n2 * 16 + (lane & 7) + (lane >> 4) * 8;
        int col = kk * 16 + ((lane >> 3) & 1) * 8;
        ldsm_x4(b0, b1, b2, b3, ks + row * SR + col);
#pragma unroll
        for (int mt = 0; mt < MT; mt++) {
          Mma<T>::run(s[mt][2 * n2], qf[mt][kk], b0, b1);
          Mma<T>::run(s[mt][2 * n2 + 1], qf[mt][kk], b2, b3);
        }
      }
    }
    const bool mask = causal || kv0 + BN > Lk;
    unsigned pk[MT][BN / 8][2];
#pragma unroll
    for (int mt = 0; mt < MT; mt++) {
      // Row maxima of the raw scores (the scale is positive), masked.
      float mx0 = -INFINITY, mx1 = -INFINITY;
#pragma unroll
      for (int nt = 0; nt < BN / 8; nt++) {
        if (mask) {
#pragma unroll
          for (int e = 0; e < 4; e++) {
            int jj = kv0 + nt * 8 + t4 * 2 + (e & 1);
            int r = e < 2 ? row0[mt] : row1[mt];
            if (jj >= Lk || (causal && jj > r)) s[mt][nt][e] = -INFINITY;
          }
        }
        mx0 = fmaxf(mx0, fmaxf(s[mt][nt][0], s[mt][nt][1]));
        mx1 = fmaxf(mx1, fmaxf(s[mt][nt][2], s[mt][nt][3]));
      }
      mx0 = fmaxf(mx0, __shfl_xor_sync(0xffffffffu, mx0, 1));
      mx0 = fmaxf(mx0, __shfl_xor_sync(0xffffffffu, mx0, 2));
      mx1 = fmaxf(mx1, __shfl_xor_sync(0xffffffffu, mx1, 1));
      mx1 = fmaxf(mx1, __shfl_xor_sync(0xffffffffu, mx1, 2));
      float mn0 = fmaxf(m0[mt], mx0 * scale_log2), mn1 = fmaxf(m1[mt], mx1 * scale_log2);
      float base0 = mn0 == -INFINITY ? 0.f : mn0, base1 = mn1 == -INFINITY ? 0.f : mn1;
      float al0 = exp2f(m0[mt] - base0), al1 = exp2f(m1[mt] - base1);
      m0[mt] = mn0;
      m1[mt] = mn1;
      float rs0 = 0.f, rs1 = 0.f;
      // P = 2^(scale·s − max), packed for the tensor cores. In fp16 the
      // exponential runs on half2 pairs. When the head has a spare padded
      // column (ones), the row sums come out of the P·V product instead.
#pragma unroll
      for (int nt = 0; nt < BN / 8; nt++) {
        float x0 = fmaf(s[mt][nt][0], scale_log2, -base0), x1 = fmaf(s[mt][nt][1], scale_log2, -base0);
        float x2 = fmaf(s[mt][nt][2], scale_log2, -base1), x3 = fmaf(s[mt][nt][3], scale_log2, -base1);
        if (std::is_same<T, f16>::value) {
          __half2 h0 = h2exp2(__floats2half2_rn(x0, x1));
          __half2 h1 = h2exp2(__floats2half2_rn(x2, x3));
          if (!ones) {
            float2 f0 = __half22float2(h0), f1 = __half22float2(h1);
            rs0 += f0.x + f0.y;
            rs1 += f1.x + f1.y;
          }
          pk[mt][nt][0] = *reinterpret_cast<unsigned*>(&h0);
          pk[mt][nt][1] = *reinterpret_cast<unsigned*>(&h1);
        } else {
          float p0 = exp2f(x0), p1 = exp2f(x1), p2 = exp2f(x2), p3 = exp2f(x3);
          rs0 += p0 + p1;
          rs1 += p2 + p3;
          pk[mt][nt][0] = Mma<T>::pack(p0, p1);
          pk[mt][nt][1] = Mma<T>::pack(p2, p3);
        }
      }
      l0[mt] = l0[mt] * al0 + rs0;
      l1[mt] = l1[mt] * al1 + rs1;
#pragma unroll
      for (int i = 0; i < DP / 8; i++) {
        o[mt][i][0] *= al0;
        o[mt][i][1] *= al0;
        o[mt][i][2] *= al1;
        o[mt][i][3] *= al1;
      }
    }
#pragma unroll
    for (int kk = 0; kk < BN / 16; kk++) {
#pragma unroll
      for (int d2 = 0; d2 < DP / 16; d2++) {
        unsigned b0, b1, b2, b3;
        int row = kk * 16 + (lane & 7) + ((lane >> 3) & 1) * 8;
        int col = d2 * 16 + (lane >> 4) * 8;
        ldsm_x4_t(b0, b1, b2, b3, vs + row * SR + col);
        if (ones && g == 0) {  // column D of V (first of its 8-column tile) reads as ones
          if (2 * d2 == nd) b0 = b1 = one2;
          if (2 * d2 + 1 == nd) b2 = b3 = one2;
        }
#pragma unroll
        for (int mt = 0; mt < MT; mt++) {
          unsigned a[4] = {pk[mt][2 * kk][0], pk[mt][2 * kk][1], pk[mt][2 * kk + 1][0], pk[mt][2 * kk + 1][1]};
          Mma<T>::run(o[mt][2 * d2], a, b0, b1);
          Mma<T>::run(o[mt][2 * d2 + 1], a, b2, b3);
        }
      }
    }
    __syncthreads();
  }
#pragma unroll
  for (int mt = 0; mt < MT; mt++) {
    float L0 = l0[mt], L1 = l1[mt];
    L0 += __shfl_xor_sync(0xffffffffu, L0, 1);
    L0 += __shfl_xor_sync(0xffffffffu, L0, 2);
    L1 += __shfl_xor_sync(0xffffffffu, L1, 1);
    L1 += __shfl_xor_sync(0xffffffffu, L1, 2);
    if (ones) {  // the sums sit in column D: thread t4 == 0 of each quad holds them
      float c0 = 0.f, c2 = 0.f;
#pragma unroll
      for (int nt = 0; nt < DP / 8; nt++)
        if (nt == nd) {
          c0 = o[mt][nt][0];
          c2 = o[mt][nt][2];
        }
      L0 = __shfl_sync(0xffffffffu, c0, lane & ~3);
      L1 = __shfl_sync(0xffffffffu, c2, lane & ~3);
    }
    float inv0 = L0 > 0.f ? 1.f / L0 : 0.f, inv1 = L1 > 0.f ? 1.f / L1 : 0.f;
#pragma unroll
    for (int nt = 0; nt < DP / 8; nt++) {
      int d = nt * 8 + t4 * 2;
      if (d < D) {
        if (row0[mt] < Lq) {
          T* p = out + (size_t)row0[mt] * ldo + d;
          p[0] = fromf<T>(o[mt][nt][0] * inv0);
          p[1] = fromf<T>(o[mt][nt][1] * inv0);
        }
        if (row1[mt] < Lq) {
          T* p = out + (size_t)row1[mt] * ldo + d;
          p[0] = fromf<T>(o[mt][nt][2] * inv1);
          p[1] = fromf<T>(o[mt][nt][3] * inv1);
        }
      }
    }
  }
}

// flash_<DP>_<type>: shared memory (64 + 64) · (DP + 8) elements, dynamic.
#define KILN_FLASH(DP, TN, T)                                                                                    \
  extern "C" __global__ void __launch_bounds__(128) flash##DP##_##TN(                                            \
      void* out, const void* q, const void* k, const void* v, int Lq, int Lk, int D, int ldq, int ldk, int ldv, \
      int ldo, float scale_log2, int causal) {                                                                   \
    flash_impl<T, DP>(out, q, k, v, Lq, Lk, D, ldq, ldk, ldv, ldo, scale_log2, causal);                          \
  }
#define KILN_FLASHP(DP, TN, T)                                                                                   \
  extern "C" __global__ void __launch_bounds__(128) flashp##DP##_##TN(                                           \
      void* out, const void* q, const void* k, const void* v, int Lq, int Lk, int D, int ldq, int ldk, int ldv, \
      int ldo, float scale_log2, int causal) {                                                                   \
    flashp_impl<T, DP, 1>(out, q, k, v, Lq, Lk, D, ldq, ldk, ldv, ldo, scale_log2, causal);                      \
  }
#define KILN_FLASHW(DP, TN, T)                                                                                   \
  extern "C" __global__ void __launch_bounds__(128) flashw##DP##_##TN(                                           \
      void* out, const void* q, const void* k, const void* v, int Lq, int Lk, int D, int ldq, int ldk, int ldv, \
      int ldo, float scale_log2, int causal) {                                                                   \
    flashp_impl<T, DP, 2>(out, q, k, v, Lq, Lk, D, ldq, ldk, ldv, ldo, scale_log2, causal);                      \
  }
// flashp<DP>: shared memory 5 · 64 · (DP + 8) elements, dynamic.
#define KILN_FLASH2(DP) KILN_FLASH(DP, f16, f16) KILN_FLASH(DP, bf16, bf16) KILN_FLASHP(DP, f16, f16) KILN_FLASHP(DP, bf16, bf16)
// flashw<DP>: two row tiles per warp (128 queries per block), shared memory
// (128 + 4 · 64) · (DP + 8) elements; for DP ≤ 64.
#define KILN_FLASHW2(DP) KILN_FLASHW(DP, f16, f16) KILN_FLASHW(DP, bf16, bf16)
KILN_FLASH2(16)
KILN_FLASH2(32)
KILN_FLASH2(48)
KILN_FLASH2(64)
KILN_FLASHW2(16)
KILN_FLASHW2(32)
KILN_FLASHW2(48)
KILN_FLASHW2(64)
KILN_FLASH2(80)
KILN_FLASH2(96)
KILN_FLASH2(128)
KILN_FLASH2(160)
