#!/usr/bin/env bash
# Runs the official openai npm client (gateway/testdata/openai-client)
# against a real `kiln serve` with the fixture model, behind an API key.
# Needs Go, Node >= 18 and npm; the only network access is the npm registry
# (npm ci). Exit status 0 means every client test passed.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
. scripts/lib-serve.sh
start_kiln openai-client

echo "== npm ci"
cd gateway/testdata/openai-client
npm ci --no-audit --no-fund --loglevel=error

echo "== openai client tests"
status=0
KILN_BASE_URL="http://$addr" KILN_API_KEY="$key" KILN_MODEL=tiny npm test || status=$?
if [ "$status" -ne 0 ]; then
	echo "--- kiln serve log" >&2
	cat "$work/serve.log" >&2
fi
exit "$status"
