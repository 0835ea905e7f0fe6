#!/usr/bin/env bash
# Prints the SHA-256 over the Hopper image's sources as the Go test computes
# it: for ../common.cuh, then each of *.cu and build.sh here in byte order of
# their names, the name (common.cuh, sm90a/NAME), a NUL, the content and a NUL.
set -euo pipefail
cd "$(dirname "$0")"
{
  printf '%s\0' common.cuh; cat ../common.cuh; printf '\0'
  for f in $(ls *.cu build.sh | LC_ALL=C sort); do
    printf '%s\0' "sm90a/$f"
    cat "$f"
    printf '\0'
  done
} | sha256sum | cut -d' ' -f1
