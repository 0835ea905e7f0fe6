#!/usr/bin/env bash
# Runs the official openai npm client (gateway/testdata/openai-client)
# against a real `kiln serve` with the fixture model, behind an API key.
# Needs Go, Node >= 18 and npm; the only network access is the npm registry
# (npm ci). Exit status 0 means every client test passed.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
model=${KILN_TEST_MODEL:-$root/../shared/fixtures/sd15-tiny/model}
if [ ! -f "$model/model_index.json" ]; then
	echo "openai-client-test: fixture model not found at $model (set KILN_TEST_MODEL)" >&2
	exit 1
fi

work=$(mktemp -d)
pid=
cleanup() {
	if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
		kill -TERM "$pid" 2>/dev/null || true
		wait "$pid" 2>/dev/null || true
	fi
	rm -rf "$work"
}
trap cleanup EXIT

echo "== build kiln"
go build -o "$work/kiln" ./cmd/kiln

echo "== create a tenant"
"$work/kiln" tenants create openai-client --data-dir "$work/data" >"$work/key" 2>"$work/tenants.log" ||
	{ cat "$work/tenants.log" >&2; exit 1; }

echo "== start kiln serve"
XDG_CACHE_HOME="$work/cache" "$work/kiln" serve --data-dir "$work/data" --listen 127.0.0.1:0 \
	--model "tiny=$model" --default-model tiny 2>"$work/serve.log" &
pid=$!
addr=
for _ in $(seq 1 600); do
	addr=$(sed -n 's/.*msg=listening addr=\([^ ]*\).*/\1/p' "$work/serve.log" | head -n 1)
	[ -n "$addr" ] && break
	if ! kill -0 "$pid" 2>/dev/null; then
		echo "openai-client-test: kiln serve exited:" >&2
		cat "$work/serve.log" >&2
		exit 1
	fi
	sleep 0.2
done
if [ -z "$addr" ]; then
	echo "openai-client-test: kiln serve did not start listening within 120 s" >&2
	cat "$work/serve.log" >&2
	exit 1
fi
echo "kiln serve listening on $addr"

echo "== npm ci"
cd gateway/testdata/openai-client
npm ci --no-audit --no-fund --loglevel=error

echo "== openai client tests"
status=0
KILN_BASE_URL="http://$addr" KILN_API_KEY="$(cat "$work/key")" KILN_MODEL=tiny npm test || status=$?
if [ "$status" -ne 0 ]; then
	echo "--- kiln serve log" >&2
	cat "$work/serve.log" >&2
fi
exit "$status"
