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

run_npm_suite gateway/testdata/comfyui-client "ComfyUI client tests"
