#!/usr/bin/env bash
# Browser tests of the web client (web/e2e): Playwright (playwright-core from
# npm) drives Debian's headless Chromium against real `kiln serve` processes
# on loopback — one keyless, one with a tenant and its API key.
#
# Installs what is missing (apt: chromium, and nodejs/npm if absent — as
# root; npm ci in web/e2e), builds kiln, starts the servers on free ports
# with temporary data directories, runs the tests, stops the servers.
# Exits non-zero when a test fails.
#
# usage: scripts/web-e2e.sh [--screenshot[=PATH]]
#   --screenshot   also write a picture of the page after finished jobs to
#                  docs/screenshot.png (or PATH); same as KILN_SCREENSHOT=PATH
# environment:
#   KILN_E2E_MODEL  model folder to serve as the default model (default: the
#                   built-in kiln-shapes, served without --model flags)
#   KILN_SCREENSHOT where to write the screenshot (unset: none)
#   KILN_BIN        a kiln binary to test instead of building one
#   KILN_E2E_TESTS  test files of web/e2e to run (default: all, in order)
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

shot=${KILN_SCREENSHOT:-}
for arg in "$@"; do
  case $arg in
    --screenshot) shot=$root/docs/screenshot.png ;;
    --screenshot=*) shot=${arg#*=} ;;
    -h | --help) sed -n '2,18p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "web-e2e: unknown argument $arg (see --help)" >&2; exit 2 ;;
  esac
done
if [[ -n $shot && $shot != /* ]]; then shot=$root/$shot; fi

# --- tools -------------------------------------------------------------------
missing=()
[[ -x /usr/bin/chromium ]] || missing+=(chromium)
command -v node >/dev/null 2>&1 || missing+=(nodejs)
command -v npm >/dev/null 2>&1 || missing+=(npm)
if ((${#missing[@]})); then
  if [[ $(id -u) != 0 ]]; then
    echo "web-e2e: ${missing[*]} missing; run as root (or apt-get install -y ${missing[*]})" >&2
    exit 1
  fi
  echo "== apt-get install ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# npm ci unless node_modules matches the lock file already.
if [[ ! -f web/e2e/node_modules/.package-lock.json || web/e2e/package-lock.json -nt web/e2e/node_modules/.package-lock.json ]]; then
  echo "== npm ci (web/e2e)"
  (cd web/e2e && npm ci --no-audit --no-fund --loglevel=error)
fi

# --- servers -----------------------------------------------------------------
work=$(mktemp -d "${TMPDIR:-/tmp}/kiln-web-e2e.XXXXXX")
pids=()
stop_servers() {
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do
    for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  pids=()
}
cleanup() {
  stop_servers
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

if [[ -n ${KILN_BIN:-} ]]; then
  echo "== using $KILN_BIN"
  cp "$KILN_BIN" "$work/kiln"
else
  echo "== go build kiln"
  go build -o "$work/kiln" ./cmd/kiln
fi

model=${KILN_E2E_MODEL:-$root/models/kiln-shapes}
model_name=$(basename "$model")
[[ -f $model/model_index.json ]] || { echo "web-e2e: no model at $model" >&2; exit 1; }
# The built-in model needs no flags (it is extracted to a private cache);
# another model is named and made the default.
model_flags=()
if [[ -n ${KILN_E2E_MODEL:-} ]]; then
  model_flags=(--model "$model_name=$model" --default-model "$model_name")
fi
export XDG_CACHE_HOME=$work/cache
# A copy with a cut-off UNet: jobs on it fail for real (model_unavailable),
# so the page's account of a failed job is tested too.
broken=$work/e2e-broken
cp -r "$model" "$broken"
find "$broken/unet" -name '*.safetensors' -exec truncate -s 1000 {} +

# A tiny SDXL model (core/model/sdxl's test weights, native 64²): the page's
# SDXL-only settings (size buckets, micro-conditioning) run against it.
sdxl=$root/core/model/sdxl/testdata/base
[[ -f $sdxl/model_index.json ]] || { echo "web-e2e: no SDXL test model at $sdxl" >&2; exit 1; }

# start NAME: runs kiln serve on a free loopback port; sets $url.
start() {
  local name=$1 log=$work/$1.log
  "$work/kiln" serve --listen 127.0.0.1:0 --data-dir "$work/$name-data" \
    "${model_flags[@]}" --model "e2e-broken=$broken" --model "e2e-sdxl=$sdxl" \
    --shutdown-timeout 5s >"$log" 2>&1 &
  pids+=($!)
  url=""
  for _ in $(seq 1 600); do
    url=$(grep -o 'url=http://127\.0\.0\.1:[0-9]*' "$log" | head -1 | cut -d= -f2 || true)
    if [[ -n $url ]] && curl -fsS -o /dev/null "$url/readyz" 2>/dev/null; then
      echo "   $name server: $url"
      return 0
    fi
    if ! kill -0 "${pids[-1]}" 2>/dev/null; then break; fi
    sleep 0.2
  done
  echo "web-e2e: the $name server did not become ready:" >&2
  tail -n 40 "$log" >&2
  exit 1
}

echo "== start servers"
start open
open_url=$url
# The keyed server gets its tenant before it starts.
key=$("$work/kiln" tenants create e2e-tenant --data-dir "$work/keyed-data" 2>"$work/tenants.log")
[[ $key == kiln_* ]] || { echo "web-e2e: kiln tenants create printed no key:" >&2; cat "$work/tenants.log" >&2; exit 1; }
start keyed
keyed_url=$url

# --- tests -------------------------------------------------------------------
echo "== browser tests"
status=0
(
  cd web/e2e
  KILN_URL=$open_url KILN_KEYED_URL=$keyed_url KILN_KEY=$key KILN_MODEL_NAME=$model_name KILN_SCREENSHOT=$shot \
    node --test --test-concurrency=1 ${KILN_E2E_TESTS:-unit.test.mjs generate.test.mjs edit.test.mjs auth.test.mjs layout.test.mjs}
) || status=$?

if ((status != 0)); then
  for f in "$work"/open.log "$work"/keyed.log; do
    echo "--- last lines of $(basename "$f")" >&2
    tail -n 30 "$f" >&2
  done
  echo "web-e2e: FAILED" >&2
  exit "$status"
fi
[[ -z $shot ]] || echo "   screenshot: $shot"
echo "web-e2e: passed"
