// FP8 (E4M3) quantisation with one scale per tensor, for the fp8 precision
// profile's matrix products (cuBLASLt, cuda/fp8.go). Two launches, no
// atomics and no zeroed scratch, so that they sit in a captured graph like
// any other kernel:
//
//   q8_amax_T(partial, x, n): grid ≤ Q8_PARTS blocks of 256 threads; block b
//     writes max |x| over its grid-stride share to partial[b].
//   q8_quant_T(q, scale, x, partial, parts, n): every block first reduces
//     the parts partial maxima (from L2), takes s = amax / 448 (1 when the
//     tensor is all zeros), writes q = saturate_e4m3(x / s) over its share,
//     and block 0 stores s at *scale: the dequantisation factor cuBLASLt's
//     A/B scale pointers take.
//
// n % 8 == 0 (16-byte loads of 8 fp16/bf16 elements, 8-byte stores).
// Non-finite inputs saturate (an amax of inf gives s = inf and q = NaN:
// the product then shows the overflow instead of hiding it).
#include "../common.cuh"
#include <cuda_fp8.h>

#define Q8_PARTS 1024
#define Q8_MAX 448.f

template <typename T>
__device__ __forceinline__ void q8_amax_impl(float* __restrict__ partial, const T* __restrict__ x, uint32_t n) {
  __shared__ float red[32];
  float m = 0.f;
  uint32_t n8 = n / 8;
  for (uint32_t i = blockIdx.x * blockDim.x + threadIdx.x; i < n8; i += gridDim.x * blockDim.x) {
    float f[8];
    Vec<T>::load(x + (size_t)i * 8, f);
#pragma unroll
    for (int j = 0; j < 8; j++) m = fmaxf(m, fabsf(f[j]));
  }
  m = block_max(m, red);
  if (threadIdx.x == 0) partial[blockIdx.x] = m;
}

template <typename T>
__device__ __forceinline__ void q8_quant_impl(uint8_t* __restrict__ q, float* __restrict__ scale, const T* __restrict__ x,
                                              const float* __restrict__ partial, uint32_t parts, uint32_t n) {
  __shared__ float red[32];
  float m = 0.f;
  for (uint32_t i = threadIdx.x; i < parts; i += blockDim.x) m = fmaxf(m, partial[i]);
  m = block_max(m, red);
  float s = m > 0.f ? m / Q8_MAX : 1.f;
  float inv = 1.f / s;
  if (blockIdx.x == 0 && threadIdx.x == 0) *scale = s;
  uint32_t n8 = n / 8;
  for (uint32_t i = blockIdx.x * blockDim.x + threadIdx.x; i < n8; i += gridDim.x * blockDim.x) {
    float f[8];
    Vec<T>::load(x + (size_t)i * 8, f);
    uint2 out;
    uint16_t* o = reinterpret_cast<uint16_t*>(&out);
#pragma unroll
    for (int j = 0; j < 4; j++) {
      o[j] = __nv_cvt_float2_to_fp8x2(make_float2(f[2 * j] * inv, f[2 * j + 1] * inv), __NV_SATFINITE, __NV_E4M3);
    }
    *reinterpret_cast<uint2*>(q + (size_t)i * 8) = out;
  }
}

extern "C" __global__ void q8_amax_f16(float* partial, const f16* x, uint32_t n) { q8_amax_impl<f16>(partial, x, n); }
extern "C" __global__ void q8_amax_bf16(float* partial, const bf16* x, uint32_t n) { q8_amax_impl<bf16>(partial, x, n); }
extern "C" __global__ void q8_quant_f16(uint8_t* q, float* scale, const f16* x, const float* partial, uint32_t parts, uint32_t n) {
  q8_quant_impl<f16>(q, scale, x, partial, parts, n);
}
extern "C" __global__ void q8_quant_bf16(uint8_t* q, float* scale, const bf16* x, const float* partial, uint32_t parts, uint32_t n) {
  q8_quant_impl<bf16>(q, scale, x, partial, parts, n);
}
