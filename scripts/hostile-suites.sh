#!/usr/bin/env bash
# The standing hostile suites (issue 24), each bounded in time, against real
# servers with the fixture model:
#   isolation  — tests/isolation: every route of /v1/openapi.json × no key,
#                malformed keys, another tenant's key, a revoked key and
#                tenant keys on operator-only routes;
#   bad input  — tests/badinput: malformed JSON, out-of-range numbers,
#                oversized bodies and headers, slowloris, image bombs,
#                multipart, hostile paths: 4xx only, server alive, heap bounded;
#   fail closed— revocation never reopens a server; signed URLs die with
#                their tenant; jobs of a vanished worker are requeued;
#   hostile Wasm — app/wasmadapter: loops, memory bombs, traps, garbage
#                answers, compile bombs, forbidden imports refused while
#                another tenant's jobs succeed;
#   WebSocket  — id floods, rate limits, 1009 for oversized messages;
#   kill -9    — cmd/kiln TestKillAudit: 3 kills mid-run + 5 in the finish
#                window, then every job and image audited (0 lost, 0 duplicated).
# Usage: scripts/hostile-suites.sh [suite...]   (default: all)
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -f ../shared/fixtures/sd15-tiny/model/model_index.json ]; then
	echo "hostile-suites: ../shared/fixtures/sd15-tiny/model is missing" >&2
	exit 1
fi
# run PATTERN CMD...: runs a suite, prints its summary lines, and its whole
# output when it fails.
run() {
	local pattern=$1 log
	shift
	log=$(mktemp)
	if ! "$@" >"$log" 2>&1; then
		cat "$log"
		rm -f "$log"
		echo "hostile-suites: FAILED: $*" >&2
		exit 1
	fi
	grep -E "^(--- |ok )|$pattern" "$log" || true
	rm -f "$log"
}
# pkgof TEST: the package directory holding a test (packages move).
pkgof() { dirname "$(grep -rl --include='*_test.go' "func $1(" . | head -n 1)"; }

suites=("$@")
[ ${#suites[@]} -eq 0 ] && suites=(isolation badinput failclosed wasm websocket kill9)
for s in "${suites[@]}"; do
	echo "== hostile suite: $s"
	case $s in
	isolation) run 'isolation matrix' go test -count=1 -timeout 5m -run 'TestIsolationMatrix' -v ./tests/isolation ;;
	badinput) run 'corpus:' go test -count=1 -timeout 5m -run 'TestBadInputCorpus' -v ./tests/badinput ;;
	failclosed) run '^ok' go test -count=1 -timeout 5m -run 'TestRevocationFailsClosed|TestOrphanedRunningJobIsRequeued|TestAuthenticateFollowsTheBucket' \
		"$(pkgof TestRevocationFailsClosed)" ./gateway/auth ;;
	wasm) run 'corpus:' go test -count=1 -timeout 5m -run 'TestHostileWasmCorpus|TestCompileBombs|TestCompileIsCanceled' -v ./app/wasmadapter ./wasmhost ;;
	websocket) run '^ok' go test -count=1 -timeout 5m -run 'TestWebSocketHostileClient' "$(pkgof TestWebSocketHostileClient)" ;;
	kill9) KILN_KILL_AUDIT=1 run 'audit:' go test -count=1 -timeout 10m -run 'TestKillAudit' -v ./cmd/kiln ;;
	*) echo "hostile-suites: unknown suite $s" >&2; exit 2 ;;
	esac
done
echo "== hostile suites passed"
