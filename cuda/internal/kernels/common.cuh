// Shared helpers of Kiln's CUDA kernels: element conversion, 16-byte vector
// access and block reductions. Every kernel is instantiated for float,
// __half and __nv_bfloat16 and exported under an extern "C" name with the
// suffix _f32, _f16 or _bf16 (see KERNELS in the Go package).
#pragma once
#include <cuda_fp16.h>
#include <cuda_bf16.h>
#include <stdint.h>

typedef __half f16;
typedef __nv_bfloat16 bf16;

template <typename T> __device__ __forceinline__ float tof(T v);
template <> __device__ __forceinline__ float tof<float>(float v) { return v; }
template <> __device__ __forceinline__ float tof<f16>(f16 v) { return __half2float(v); }
template <> __device__ __forceinline__ float tof<bf16>(bf16 v) { return __bfloat162float(v); }

template <typename T> __device__ __forceinline__ T fromf(float v);
template <> __device__ __forceinline__ float fromf<float>(float v) { return v; }
template <> __device__ __forceinline__ f16 fromf<f16>(float v) { return __float2half_rn(v); }
template <> __device__ __forceinline__ bf16 fromf<bf16>(float v) { return __float2bfloat16_rn(v); }

// Vec moves 16 bytes (N elements of T) between memory and float registers.
template <typename T> struct Vec {
  static constexpr int N = 16 / sizeof(T);
  __device__ __forceinline__ static void load(const T* p, float* f) {
    uint4 u = *reinterpret_cast<const uint4*>(p);
    const T* e = reinterpret_cast<const T*>(&u);
#pragma unroll
    for (int i = 0; i < N; i++) f[i] = tof<T>(e[i]);
  }
  __device__ __forceinline__ static void store(T* p, const float* f) {
    uint4 u;
    T* e = reinterpret_cast<T*>(&u);
#pragma unroll
    for (int i = 0; i < N; i++) e[i] = fromf<T>(f[i]);
    *reinterpret_cast<uint4*>(p) = u;
  }
};

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

// block_sum returns the sum of v over the block (blockDim.x a multiple of 32,
// at most 1024) to every thread. scratch holds 32 floats.
__device__ __forceinline__ float block_sum(float v, float* scratch) {
  int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  v = warp_sum(v);
  __syncthreads();
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  int nw = blockDim.x >> 5;
  float t = lane < nw ? scratch[lane] : 0.f;
  return warp_sum(t);
}

__device__ __forceinline__ float block_max(float v, float* scratch) {
  int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  v = warp_max(v);
  __syncthreads();
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  int nw = blockDim.x >> 5;
  float t = lane < nw ? scratch[lane] : -INFINITY;
  return warp_max(t);
}

__device__ __forceinline__ float gelu_erf(float x) { return 0.5f * x * (1.f + erff(x * 0.70710678118654752f)); }
__device__ __forceinline__ float silu(float x) { return x / (1.f + __expf(-x)); }

// Instantiate a kernel template for the three element types under
// extern "C" names NAME_f32, NAME_f16 and NAME_bf16.
#define KILN_EXPORT3(NAME, PARAMS, ARGS)                                              \
  extern "C" __global__ void NAME##_f32 PARAMS { NAME##_impl<float> ARGS; }           \
  extern "C" __global__ void NAME##_f16 PARAMS { NAME##_impl<f16> ARGS; }             \
  extern "C" __global__ void NAME##_bf16 PARAMS { NAME##_impl<bf16> ARGS; }
