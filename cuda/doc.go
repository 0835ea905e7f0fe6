// Package cuda implements backend.Backend on NVIDIA GPUs. It reaches the
// CUDA driver, cuBLAS/cuBLASLt and (optionally) cuDNN through dlopen
// (packages internal/cu, internal/cublas and internal/cudnn), so the
// ordinary build, also with CGO_ENABLED=0, has GPU support; Select and
// SelectAll fall back to the CPU backend with a one-line reason when no
// usable GPU is found.
//
// Why Kiln binds CUDA itself: gorgonia.org/cu, the usual Go binding, does
// not compile against CUDA 13 headers (v0.9.6: cuCtxCreate,
// cuMemPrefetchAsync, cuMemAdvise and cuGraphAddDependencies changed
// signature), and it links libcuda at build time, so a binary built with
// it needs the CUDA toolkit to build and a driver to start. Kiln needs a
// few dozen driver-API and cuBLAS(Lt) entry points; binding them through
// dlopen (ebitengine/purego; a call into the driver costs about 0.4 µs)
// keeps one binary for every host, no toolkit or headers to build or
// test, and a CPU fallback where no driver is found. docs/RATIONALE.md
// records the decision with its evidence.
//
// A Device is one GPU; its Backend views compute with fp16, bf16 or fp32
// activations. Ops are recorded and run on one locked OS thread when a
// result is read, memory comes from a caching allocator planned per
// segment, and a repeated segment is captured once as a CUDA graph and
// replayed. For each new shape the convolution and matrix-product methods
// are tried, checked against a reference and timed, and the fastest kept.
package cuda
