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

run_npm_suite gateway/testdata/openapi-validate "validate the OpenAPI document"
