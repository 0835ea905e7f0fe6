// Package cuda implements backend.Backend on NVIDIA GPUs. It reaches the
// CUDA driver, cuBLAS/cuBLASLt and (optionally) cuDNN through dlopen
// (packages cu, cublas and cudnn), so the ordinary build, also with
// CGO_ENABLED=0, has GPU support; Select and SelectAll fall back to the CPU
// backend with a one-line reason when no usable GPU is found.
//
// A Device is one GPU; its Backend views compute with fp16, bf16 or fp32
// activations. Ops are recorded and run on one locked OS thread when a
// result is read, memory comes from a caching allocator planned per
// segment, and a repeated segment is captured once as a CUDA graph and
// replayed. For each new shape the convolution and matrix-product methods
// are tried, checked against a reference and timed, and the fastest kept.
package cuda
