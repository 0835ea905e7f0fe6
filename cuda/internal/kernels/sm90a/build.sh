#!/usr/bin/env bash
# Builds the optional Hopper image (kernels.fatbin here: sm_90a SASS only)
# from the *.cu files here (wgmma attention, fp8 quantisation) as one
# translation unit and records the hash of its sources (those, this script
# and ../common.cuh) in kernels.sum. Needs nvcc 12.0 or later:
# wgmma exists only for sm_90a, which nvcc 11.8 cannot target. An image
# from nvcc 13 loads on drivers r580 and up; Kiln loads it only on sm_90
# devices and falls back to the portable image (../build.sh) when the
# driver refuses it.
set -euo pipefail
cd "$(dirname "$0")"
NVCC="${NVCC:-nvcc}"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
{
  echo "// generated unity translation unit: every Hopper kernel source in one module"
  for f in $(ls *.cu | LC_ALL=C sort); do echo "#include \"$PWD/$f\""; done
} > "$tmp/all.cu"
"$NVCC" -fatbin -O3 -std=c++17 -I"$PWD/.." -gencode arch=compute_90a,code=sm_90a -Xfatbin=-compress-all --split-compile=0 \
  -o "$tmp/kernels.fatbin" "$tmp/all.cu"
mv "$tmp/kernels.fatbin" kernels.fatbin
"${CUOBJDUMP:-cuobjdump}" -symbols kernels.fatbin | awk '/STO_ENTRY/ {print $NF}' | LC_ALL=C sort -u > kernels.list
src="$(./sourcehash.sh)"
img="$(sha256sum kernels.fatbin | cut -d' ' -f1)"
list="$(sha256sum kernels.list | cut -d' ' -f1)"
printf 'sources %s\nimage %s\nlist %s\nnvcc %s\n' "$src" "$img" "$list" "$("$NVCC" --version | tail -1 | tr -s ' ')" > kernels.sum
cat kernels.sum
