#!/usr/bin/env bash
# Soak: runs kiln serve (fixture model, CPU) under steady mixed load — jobs,
# listings, WebSocket subscribers, module uploads — for DURATION (default
# 30m) and reports RSS, goroutines, open files, queue depth and job
# outcomes every EVERY (default 10s); fails when RSS, goroutines or open
# files grow after the warm-up (a fifth of the run), or when a job fails.
#   DURATION=5m scripts/soak.sh
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
model=${KILN_TEST_MODEL:-$root/../shared/fixtures/sd15-tiny/model}
[ -f "$model/model_index.json" ] || { echo "soak: fixture model not found at $model" >&2; exit 1; }
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
go build -o "$work/kiln" ./cmd/kiln
go build -o "$work/soak" ./tools/soak
: >"$work/serve.log" # exists before the server opens it: the wait loop reads it at once
XDG_CACHE_HOME="$work/cache" "$work/kiln" serve --data-dir "$work/data" --listen 127.0.0.1:0 --builtin-model=false \
	--model "tiny=$model" --default-model tiny 2>"$work/serve.log" &
pid=$!
addr=
for _ in $(seq 1 600); do
	addr=$(sed -n 's/.*msg=listening addr=\([^ ]*\).*/\1/p' "$work/serve.log" | head -n 1)
	[ -n "$addr" ] && break
	kill -0 "$pid" 2>/dev/null || { cat "$work/serve.log" >&2; exit 1; }
	sleep 0.2
done
[ -n "$addr" ] || { echo "soak: server did not start" >&2; exit 1; }
"$work/soak" -base "http://$addr" -pid "$pid" -duration "${DURATION:-30m}" -every "${EVERY:-10s}" "$@"
