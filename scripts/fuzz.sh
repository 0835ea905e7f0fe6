#!/usr/bin/env bash
# Runs every fuzz target of the module for a set time and keeps what it
# finds: new corpus entries (from the Go fuzz cache) are copied into the
# target's testdata/fuzz/<Target>/ folder, where `go test` replays them as
# regression inputs. Prints executions per target; exits non-zero when a
# target finds a failure (its input is then in testdata/fuzz as well).
#
#   scripts/fuzz.sh                 every target, FUZZTIME each (default 30s)
#   FUZZTIME=10m scripts/fuzz.sh FuzzMerge FuzzHeader   chosen targets
#
# New inputs are not minimised (-fuzzminimizetime 0): minimising them is
# what made runs report "0 execs/s" for a minute at a time on a busy
# machine (golang/go#51484), the "stall" first blamed on config.Merge.
# KEEP caps the entries kept per target (default 200, files up to 16 KiB).
set -euo pipefail
cd "$(dirname "$0")/.."
fuzztime=${FUZZTIME:-30s}
keep=${KEEP:-200}
cache=$(go env GOCACHE)/fuzz
module=$(go list -m)
want=" $* "
status=0
printf '%-60s %14s %s\n' "target" "executions" "result"
while IFS=: read -r file name; do
	[ $# -gt 0 ] && [[ $want != *" $name "* ]] && continue
	dir=$(dirname "$file")
	log=$(mktemp)
	if go test -run '^$' -fuzz "^${name}\$" -fuzztime "$fuzztime" -fuzzminimizetime 0 "./$dir" >"$log" 2>&1; then
		result=ok
	else
		result=FAILED
		status=1
	fi
	execs=$(grep -o 'execs: [0-9]*' "$log" | tail -n 1 | cut -d' ' -f2)
	printf '%-60s %14s %s\n' "${dir#./}/$name" "${execs:-?}" "$result"
	[ "$result" = FAILED ] && sed -n '1,40p' "$log"
	rm -f "$log"
	# Keep the corpus: new entries from the cache, smallest first.
	src="$cache/$module/${dir#./}/$name"
	if [ -d "$src" ]; then
		dst="$dir/testdata/fuzz/$name"
		mkdir -p "$dst"
		have=$(find "$dst" -type f | wc -l)
		# The loop may stop reading early (KEEP reached): the writers' SIGPIPE
		# is expected, not a failure of the run.
		find "$src" -type f -size -16k -printf '%s %p\n' | sort -n | cut -d' ' -f2- | while read -r f; do
			[ "$have" -ge "$keep" ] && break
			b=$(basename "$f")
			if [ ! -e "$dst/$b" ]; then
				cp "$f" "$dst/$b"
				have=$((have + 1))
			fi
		done || true
	fi
done < <(grep -rl --include='*_test.go' '^func Fuzz' . | xargs grep -o '^func Fuzz[A-Za-z0-9_]*' | sed 's/func //' | sort)
exit $status
