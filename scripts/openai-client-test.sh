#!/usr/bin/env bash
# Runs the official openai npm client (gateway/testdata/openai-client)
# against real `kiln serve` processes with the fixture model, twice:
#   keys     — a server with a tenant: its key works, unknown keys, dummy
#              keys and no key are 401 (AuthenticationError);
#   keyless  — a loopback server in a fresh data directory: the SDK's
#              dummy bearer, and no Authorization at all, are the local tenant.
# Each run covers images.generate, images.edit (multipart, image[] array
# and an alpha mask) and images.createVariation with response_format url
# and b64_json, and OpenAI-shaped errors. Needs Go, Node >= 18 and npm; the only network
# access is the npm registry (npm ci). Exit status 0 means every test passed.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
model=${KILN_TEST_MODEL:-$root/../shared/fixtures/sd15-tiny/model}
if [ ! -f "$model/model_index.json" ]; then
	echo "openai-client-test: fixture model not found at $model (set KILN_TEST_MODEL)" >&2
	exit 1
fi

work=$(mktemp -d)
pids=()
cleanup() {
	for p in "${pids[@]}"; do
		if kill -0 "$p" 2>/dev/null; then
			kill -TERM "$p" 2>/dev/null || true
			wait "$p" 2>/dev/null || true
		fi
	done
	rm -rf "$work"
}
trap cleanup EXIT

# serve NAME: starts kiln serve on data directory $work/NAME, sets $addr.
serve() {
	local name=$1 log="$work/$1.log"
	: >"$log" # exists before the server opens it: the wait loop reads it at once
	XDG_CACHE_HOME="$work/cache" "$work/kiln" serve --data-dir "$work/$name" --listen 127.0.0.1:0 \
		--model "tiny=$model" --default-model tiny 2>"$log" &
	local pid=$!
	pids+=("$pid")
	addr=
	for _ in $(seq 1 600); do
		addr=$(sed -n 's/.*msg=listening addr=\([^ ]*\).*/\1/p' "$log" | head -n 1)
		[ -n "$addr" ] && break
		if ! kill -0 "$pid" 2>/dev/null; then
			echo "openai-client-test: kiln serve ($name) exited:" >&2
			cat "$log" >&2
			exit 1
		fi
		sleep 0.2
	done
	if [ -z "$addr" ]; then
		echo "openai-client-test: kiln serve ($name) did not start listening within 120 s" >&2
		cat "$log" >&2
		exit 1
	fi
	echo "kiln serve ($name) listening on $addr"
}

echo "== build kiln"
go build -o "$work/kiln" ./cmd/kiln

echo "== create a tenant"
"$work/kiln" tenants create openai-client --data-dir "$work/keys" >"$work/key" 2>"$work/tenants.log" ||
	{ cat "$work/tenants.log" >&2; exit 1; }

echo "== start kiln serve (with a tenant, and keyless)"
serve keys
keys_addr=$addr
serve keyless
keyless_addr=$addr

echo "== npm ci"
cd gateway/testdata/openai-client
npm ci --no-audit --no-fund --loglevel=error

status=0
echo "== openai client tests: API keys"
KILN_AUTH=keys KILN_BASE_URL="http://$keys_addr" KILN_API_KEY="$(cat "$work/key")" KILN_MODEL=tiny npm test || status=$?
echo "== openai client tests: keyless"
KILN_AUTH=keyless KILN_BASE_URL="http://$keyless_addr" KILN_MODEL=tiny npm test || status=$?
if [ "$status" -ne 0 ]; then
	for f in keys keyless; do
		echo "--- kiln serve log ($f)" >&2
		cat "$work/$f.log" >&2
	done
fi
exit "$status"
