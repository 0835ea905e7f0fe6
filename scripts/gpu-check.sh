#!/usr/bin/env bash
# gpu-check.sh: on a CUDA machine, run Kiln's GPU test suite (every op against
# the CPU backend, the fixture text encoder/UNet/VAE, graph capture), the
# kernel timings and the benchmarks in one go, then print one summary table.
#
#   scripts/gpu-check.sh                 # builds with go when it is installed
#   KILN_GPU_BIN=.devcarry scripts/gpu-check.sh   # or uses prebuilt binaries:
#       $KILN_GPU_BIN/cuda.test (go test -c ./cuda) and $KILN_GPU_BIN/kiln
#
# Environment: OUT (results folder, default out/gpu-check), KILN_FIXTURES
# (default ../shared/fixtures or $KILN_GPU_BIN/fixtures), BENCH_MODELS
# (default synthetic:sd15), BENCH_BATCHES (default 1,4,8), BENCH_ITERS (3),
# SKIP_TESTS=1, SKIP_BENCH=1.
set -uo pipefail
cd "$(dirname "$0")/.."
root="$PWD"
OUT="${OUT:-$root/out/gpu-check}"
mkdir -p "$OUT"
bin="${KILN_GPU_BIN:-}"
if [ -n "$bin" ]; then
  bin="$(cd "$bin" && pwd)"
  if [ -z "${KILN_FIXTURES:-}" ] && [ -f "$bin/fixtures.tar.xz" ]; then
    fx="${TMPDIR:-/tmp}/kiln-fixtures"; mkdir -p "$fx"
    tar -C "$fx" -xJf "$bin/fixtures.tar.xz" 2>/dev/null ||
      python3 -c 'import sys, tarfile; tarfile.open(sys.argv[1]).extractall(sys.argv[2])' "$bin/fixtures.tar.xz" "$fx"
    export KILN_FIXTURES="$fx"
  fi
  if [ -z "${KILN_FIXTURES:-}" ] && [ -d "$bin/fixtures" ]; then export KILN_FIXTURES="$bin/fixtures"; fi
  TEST="$bin/cuda.test"
  KILN="$bin/kiln" # optional: without it the test binary runs doctor and bench
  if [ ! -x "$KILN" ] && [ -f "$bin/kiln.xz" ]; then
    KILN="${TMPDIR:-/tmp}/kiln"
    xz -dc "$bin/kiln.xz" > "$KILN" 2>/dev/null ||
      python3 -c 'import lzma, shutil, sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[2], "wb"))' "$bin/kiln.xz" "$KILN"
    chmod +x "$KILN"
  fi
else
  command -v go >/dev/null || { echo "gpu-check: neither go nor KILN_GPU_BIN" >&2; exit 2; }
  mkdir -p "$OUT/bin"
  go test -c -o "$OUT/bin/cuda.test" ./cuda || exit 1
  go build -o "$OUT/bin/kiln" ./cmd/kiln || exit 1
  TEST="$OUT/bin/cuda.test"
  KILN="$OUT/bin/kiln"
fi
status=0
step() { echo; echo "== $*"; }

step "GPU"
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv 2>&1 | tee "$OUT/nvidia-smi.txt"
step "kiln doctor"
if [ -x "$KILN" ]; then
  "$KILN" doctor 2>&1 | tee "$OUT/doctor.txt"
else
  (cd cuda && "$TEST" -test.run TestDoctorReport -test.v 2>&1) | tee "$OUT/doctor.txt"
fi

if [ "${SKIP_TESTS:-0}" != 1 ]; then
  step "GPU tests (ops vs CPU, fixture models, graphs)"
  (cd cuda && KILN_TIMINGS_OUT="$OUT/kernel-timings.txt" timeout "${TEST_TIMEOUT:-420}" "$TEST" -test.v -test.count=1 ${TEST_RUN:+-test.run "$TEST_RUN"}) > "$OUT/tests.log" 2>&1
  rc=$?
  [ $rc -ne 0 ] && status=1
  grep -E "^(--- |FAIL|PASS|ok )|relative error .* >|panic|error:" "$OUT/tests.log" | grep -v -- "--- PASS" | tail -60
  echo "tests exit status $rc"
fi

if [ "${SKIP_BENCH:-0}" != 1 ]; then
  step "kiln bench"
  if [ -x "$KILN" ]; then
    timeout "${BENCH_TIMEOUT:-360}" "$KILN" bench --models "${BENCH_MODELS:-synthetic:sd15}" --batch-sizes "${BENCH_BATCHES:-1,4,8}" \
      --steps 20 --iterations "${BENCH_ITERS:-3}" --profile --output "$OUT/bench.json" > "$OUT/bench.txt" 2> "$OUT/bench.err"
    rc=$?
  else
    (cd cuda && KILN_BENCH=1 KILN_BENCH_MODELS="${BENCH_MODELS:-synthetic:sd15}" KILN_BENCH_BATCHES="${BENCH_BATCHES:-1,4,8}" \
      KILN_BENCH_STEPS=20 KILN_BENCH_ITERS="${BENCH_ITERS:-3}" KILN_BENCH_PROFILE=1 KILN_BENCH_OUT="$OUT/bench.json" KILN_BENCH_CPUPROFILE="$OUT/bench-cpu.pprof" \
      timeout "${BENCH_TIMEOUT:-360}" "$TEST" -test.run 'TestGPUBench$' -test.v -test.timeout 0) > "$OUT/bench.txt" 2> "$OUT/bench.err"
    rc=$?
  fi
  [ $rc -ne 0 ] && status=1
  tail -5 "$OUT/bench.err"
fi

step "summary"
if [ -f "$OUT/tests.log" ]; then
  pass=$(grep -c -- "^--- PASS" "$OUT/tests.log"); fail=$(grep -c -- "^--- FAIL" "$OUT/tests.log"); skip=$(grep -c -- "^--- SKIP" "$OUT/tests.log")
  printf "%-28s %s passed, %s failed, %s skipped\n" "tests" "$pass" "$fail" "$skip"
  for tgt in gpu/F32 gpu/F16 gpu/BF16; do
    worst=$(grep -E "on $tgt(/[0-9x]+)?: relative error" "$OUT/tests.log" | sed -E 's/.*relative error ([0-9.e+-]+).*/\1/' | sort -g | tail -1)
    n=$(grep -cE "on $tgt(/[0-9x]+)?: relative error" "$OUT/tests.log")
    printf "%-28s %s checks, worst relative error %s\n" "parity $tgt" "$n" "${worst:--}"
  done
fi
[ -f "$OUT/kernel-timings.txt" ] && { echo; cat "$OUT/kernel-timings.txt"; }
[ -f "$OUT/bench.txt" ] && { echo; cat "$OUT/bench.txt"; }
exit $status
