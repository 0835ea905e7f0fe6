#!/usr/bin/env bash
# Checks that the committed built-in Wasm guests match their source: it
# rebuilds them with scripts/build-wasm.sh into a temporary directory and
# compares the bytes. The committed files were built with the toolchain
# named in scripts/wasm-toolchain.txt; another Go release may emit other
# bytes, so a mismatch says which toolchain to use.
set -euo pipefail
cd "$(dirname "$0")/.."
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
scripts/build-wasm.sh "$tmp"
status=0
for f in policies/builtin.wasm nodes-wasm/builtin.wasm; do
	if cmp -s "$f" "$tmp/$f"; then
		echo "ok   $f ($(sha256sum "$f" | cut -c1-16))"
	else
		echo "FAIL $f does not match its source: run 'task wasm:build' and commit it" >&2
		status=1
	fi
done
if [[ $status -ne 0 ]]; then
	echo "committed guests were built with: $(cat scripts/wasm-toolchain.txt 2>/dev/null || echo unknown)" >&2
	echo "this build used:                  $(cat "$tmp/wasm-toolchain.txt")" >&2
fi
exit $status
