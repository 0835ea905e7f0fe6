#!/usr/bin/env bash
# Rebuilds Kiln's built-in Wasm guests from source, deterministically:
#   policies/guest   -> policies/builtin.wasm
#   nodes-wasm/guest -> nodes-wasm/builtin.wasm
# Usage: scripts/build-wasm.sh [OUTDIR]   (default: write in place)
# The flags are pinned so that the same Go toolchain yields the same bytes;
# scripts/check-wasm.sh compares the committed files with a fresh build.
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-}"

build() { # package output
	local dst="$2"
	if [[ -n "$out" ]]; then dst="$out/$2"; fi
	mkdir -p "$(dirname "$dst")"
	env -u GOFLAGS -u GOEXPERIMENT -u GOWASM \
		GOOS=wasip1 GOARCH=wasm CGO_ENABLED=0 GOTOOLCHAIN=local \
		go build -buildmode=c-shared -trimpath -buildvcs=false \
		-ldflags='-s -w -buildid=' -o "$dst" "./$1"
}

build policies/guest policies/builtin.wasm
build nodes-wasm/guest nodes-wasm/builtin.wasm
go version > "${out:-.}/wasm-toolchain.txt.tmp"
if [[ -z "$out" ]]; then
	mv wasm-toolchain.txt.tmp scripts/wasm-toolchain.txt
else
	mv "$out/wasm-toolchain.txt.tmp" "$out/wasm-toolchain.txt"
fi
