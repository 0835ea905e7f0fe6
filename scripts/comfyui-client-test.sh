#!/usr/bin/env bash
# Runs a published ComfyUI client (@saintno/comfyui-sdk,
# gateway/testdata/comfyui-client) against a real `kiln serve` with the
# fixture model, behind an API key. Needs Go, Node >= 18 and npm; the only
# network access is the npm registry (npm ci).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
. scripts/lib-serve.sh
start_kiln comfyui-client

echo "== npm ci"
cd gateway/testdata/comfyui-client
npm ci --no-audit --no-fund --loglevel=error

echo "== ComfyUI client tests"
status=0
KILN_BASE_URL="http://$addr" KILN_API_KEY="$key" npm test || status=$?
if [ "$status" -ne 0 ]; then
	echo "--- kiln serve log" >&2
	cat "$work/serve.log" >&2
fi
exit "$status"
