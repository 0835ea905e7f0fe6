#!/usr/bin/env bash
# Prints the SHA-256 over the kernel sources as the Go test computes it: for
# each of *.cu, *.cuh and build.sh in byte order of their names, the name, a
# NUL, the content and a NUL.
set -euo pipefail
cd "$(dirname "$0")"
for f in $(ls *.cu *.cuh build.sh | LC_ALL=C sort); do
  printf '%s\0' "$f"
  cat "$f"
  printf '\0'
done | sha256sum | cut -d' ' -f1
