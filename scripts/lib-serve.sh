# Sourced by the client test scripts: builds kiln, creates a tenant and
# starts `kiln serve` with the fixture model on a free loopback port.
# Sets $work (a temporary folder, removed on exit), $addr (host:port) and
# $key (the tenant's API key). Needs $root (the repository root).
model=${KILN_TEST_MODEL:-$root/../shared/fixtures/sd15-tiny/model}
if [ ! -f "$model/model_index.json" ]; then
	echo "$(basename "$0"): fixture model not found at $model (set KILN_TEST_MODEL)" >&2
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

# start_kiln TENANT: builds kiln, creates TENANT and starts the server.
start_kiln() {
	echo "== build kiln"
	go build -o "$work/kiln" ./cmd/kiln

	echo "== create a tenant"
	"$work/kiln" tenants create "$1" --data-dir "$work/data" >"$work/key" 2>"$work/tenants.log" ||
		{ cat "$work/tenants.log" >&2; exit 1; }
	key=$(cat "$work/key")

	echo "== start kiln serve"
	: >"$work/serve.log" # exists before the server opens it: the wait loop reads it at once
	XDG_CACHE_HOME="$work/cache" "$work/kiln" serve --data-dir "$work/data" --listen 127.0.0.1:0 \
		--model "tiny=$model" --default-model tiny 2>"$work/serve.log" &
	pid=$!
	addr=
	for _ in $(seq 1 600); do
		addr=$(sed -n 's/.*msg=listening addr=\([^ ]*\).*/\1/p' "$work/serve.log" | head -n 1)
		[ -n "$addr" ] && break
		if ! kill -0 "$pid" 2>/dev/null; then
			echo "$(basename "$0"): kiln serve exited:" >&2
			cat "$work/serve.log" >&2
			exit 1
		fi
		sleep 0.2
	done
	if [ -z "$addr" ]; then
		echo "$(basename "$0"): kiln serve did not start listening within 120 s" >&2
		cat "$work/serve.log" >&2
		exit 1
	fi
	echo "kiln serve listening on $addr"
}

# run_npm_suite DIR TITLE: installs the npm project in DIR and runs its tests
# against the started server (KILN_BASE_URL, KILN_API_KEY); on failure the
# server's log follows. Exits with the tests' status.
run_npm_suite() {
	echo "== npm ci"
	cd "$root/$1"
	npm ci --no-audit --no-fund --loglevel=error
	echo "== $2"
	local status=0
	KILN_BASE_URL="http://$addr" KILN_API_KEY="$key" npm test || status=$?
	if [ "$status" -ne 0 ]; then
		echo "--- kiln serve log" >&2
		cat "$work/serve.log" >&2
	fi
	exit "$status"
}
