#!/usr/bin/env bash
# Regenerates kernels.fatbin from the *.cu sources in this folder and records
# the hash of the sources (and of this script, whose flags shape the image) in
# kernels.sum, so that a test catches an image that is older than its sources.
#
# Build with CUDA 11.8 or 12.x nvcc (Debian's nvidia-cuda-toolkit is 11.8) so
# that the image loads on drivers from r520 up; nvcc 13 images need r580.
# SASS for sm_80, sm_86, sm_89 and sm_90, plus compute_90 PTX for newer GPUs.
set -euo pipefail
cd "$(dirname "$0")"
NVCC="${NVCC:-nvcc}"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
{
  echo "// generated unity translation unit: every kernel source in one module"
  for f in $(ls *.cu | LC_ALL=C sort); do echo "#include \"$PWD/$f\""; done
} > "$tmp/all.cu"
"$NVCC" -fatbin -O3 -std=c++17 -I"$PWD" \
  -gencode arch=compute_80,code=sm_80 \
  -gencode arch=compute_86,code=sm_86 \
  -gencode arch=compute_89,code=sm_89 \
  -gencode arch=compute_90,code=sm_90 \
  -gencode arch=compute_90,code=compute_90 \
  -Xfatbin=-compress-all \
  -o "$tmp/kernels.fatbin" "$tmp/all.cu"
mv "$tmp/kernels.fatbin" kernels.fatbin
# The entry points, for `kiln doctor` and the test that every kernel the
# backend launches exists.
"${CUOBJDUMP:-cuobjdump}" -symbols kernels.fatbin | awk '/STO_ENTRY/ {print $NF}' | LC_ALL=C sort -u > kernels.list
src="$(./sourcehash.sh)"
img="$(sha256sum kernels.fatbin | cut -d' ' -f1)"
list="$(sha256sum kernels.list | cut -d' ' -f1)"
printf 'sources %s\nimage %s\nlist %s\nnvcc %s\n' "$src" "$img" "$list" "$("$NVCC" --version | tail -1 | tr -s ' ')" > kernels.sum
cat kernels.sum
