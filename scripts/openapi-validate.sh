#!/usr/bin/env bash
# Validates the OpenAPI 3.1 document a real `kiln serve` publishes at
# /v1/openapi.json with @seriousme/openapi-schema-validator
# (gateway/testdata/openapi-validate), and checks /docs. Needs Go, Node >= 18
# and npm; the only network access is the npm registry (npm ci).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
. scripts/lib-serve.sh
start_kiln openapi-validate

echo "== npm ci"
cd gateway/testdata/openapi-validate
npm ci --no-audit --no-fund --loglevel=error

echo "== validate the OpenAPI document"
status=0
KILN_BASE_URL="http://$addr" KILN_API_KEY="$key" npm test || status=$?
if [ "$status" -ne 0 ]; then
	echo "--- kiln serve log" >&2
	cat "$work/serve.log" >&2
fi
exit "$status"
