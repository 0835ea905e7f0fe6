#!/usr/bin/env bash
# bench-vs-torch.sh: on a GPU machine, run `kiln bench --models synthetic:sd15`
# and the PyTorch + diffusers baseline (scripts/bench_torch.py: the same
# architecture with random fp16 weights, eager and torch.compile) in one go
# at the same batch sizes, steps and guidance, and write one table of ratios.
#
#   scripts/bench-vs-torch.sh                       # builds kiln with go
#   KILN=path/to/kiln scripts/bench-vs-torch.sh      # or a prebuilt binary
#       (KILN may also name a kiln.xz, decompressed to $TMPDIR)
#   KILN_TEST=path/to/cuda.test scripts/bench-vs-torch.sh
#       # or the CUDA package's test binary (go test -c ./cuda), whose
#       # TestGPUBench runs the same suite: smaller to carry to a GPU host
#
# Environment: OUT (results folder, default out/bench-vs-torch), BATCHES
# (default 1,4,8,16), STEPS (20), GUIDANCE (7.5), ITERS (3), MODES
# (eager,compile), COMPILE_MODE (default), COMPILE_DYNAMIC=1 (one compile
# with a dynamic batch instead of ~60 s per batch size), KILN_MODEL (synthetic:sd15),
# DIFFUSERS (a diffusers src/ folder or a .tgz of src/; default: whatever
# PYTHONPATH finds), KILN_PROFILE=1 (add the per-kernel breakdown),
# TORCH_TIMEOUT (seconds for the baseline, default 420), SKIP_KILN=1,
# SKIP_TORCH=1. Results: $OUT/kiln.json, $OUT/torch.json, $OUT/table.md.
set -uo pipefail
cd "$(dirname "$0")/.."
root="$PWD"
OUT="${OUT:-$root/out/bench-vs-torch}"
mkdir -p "$OUT" && OUT="$(cd "$OUT" && pwd)"
BATCHES="${BATCHES:-1,4,8,16}"
STEPS="${STEPS:-20}"
GUIDANCE="${GUIDANCE:-7.5}"
status=0

nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>&1 | tee "$OUT/nvidia-smi.txt"

unxz() { # $1: file.xz → a decompressed executable in $TMPDIR
  local dst="${TMPDIR:-/tmp}/$(basename "${1%.xz}")-bench"
  xz -dc "$1" > "$dst" 2>/dev/null ||
    python3 -c 'import lzma, shutil, sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[2], "wb"))' "$1" "$dst"
  chmod +x "$dst"
  echo "$dst"
}

if [ "${SKIP_KILN:-0}" != 1 ]; then
  KILN="${KILN:-}"
  KILN_TEST="${KILN_TEST:-}"
  [[ "$KILN" == *.xz ]] && KILN="$(unxz "$KILN")"
  [[ "$KILN_TEST" == *.xz ]] && KILN_TEST="$(unxz "$KILN_TEST")"
  if [ -z "$KILN" ] && [ -z "$KILN_TEST" ]; then
    command -v go >/dev/null || { echo "bench-vs-torch: neither go nor KILN or KILN_TEST" >&2; exit 2; }
    KILN="$OUT/kiln"
    go build -o "$KILN" ./cmd/kiln || exit 1
  fi
  echo "== kiln bench (${KILN_MODEL:-synthetic:sd15}, batches $BATCHES)"
  if [ -n "$KILN" ]; then
    prof=()
    [ "${KILN_PROFILE:-0}" = 1 ] && prof=(--profile)
    timeout "${KILN_TIMEOUT:-300}" "$KILN" bench --models "${KILN_MODEL:-synthetic:sd15}" --batch-sizes "$BATCHES" --steps "$STEPS" \
      --guidance "$GUIDANCE" --iterations "${ITERS:-3}" "${prof[@]}" --output "$OUT/kiln.json" > "$OUT/kiln.txt" 2> "$OUT/kiln.err"
  else
    (cd cuda && KILN_BENCH=1 KILN_BENCH_MODELS="${KILN_MODEL:-synthetic:sd15}" KILN_BENCH_BATCHES="$BATCHES" KILN_BENCH_STEPS="$STEPS" \
      KILN_BENCH_ITERS="${ITERS:-3}" KILN_BENCH_PROFILE="${KILN_PROFILE:-0}" KILN_BENCH_OUT="$OUT/kiln.json" \
      timeout "${KILN_TIMEOUT:-300}" "$KILN_TEST" -test.run 'TestGPUBench$' -test.v -test.timeout 0) > "$OUT/kiln.txt" 2> "$OUT/kiln.err"
  fi
  rc=$?
  [ $rc -ne 0 ] && { status=1; echo "kiln bench exit status $rc"; tail -5 "$OUT/kiln.err"; }
  grep -E "^(synthetic|model)" "$OUT/kiln.txt" | head -12
fi

if [ "${SKIP_TORCH:-0}" != 1 ]; then
  d="${DIFFUSERS:-}"
  if [[ "$d" == *.tgz || "$d" == *.tar.gz ]]; then
    x="${TMPDIR:-/tmp}/diffusers-src"
    mkdir -p "$x" && tar xzf "$d" -C "$x" && d="$x/src"
  fi
  [ -n "$d" ] && export PYTHONPATH="$d${PYTHONPATH:+:$PYTHONPATH}"
  echo "== PyTorch baseline (${MODES:-eager,compile})"
  timeout "${TORCH_TIMEOUT:-420}" python3 scripts/bench_torch.py --batches "$BATCHES" --steps "$STEPS" --guidance "$GUIDANCE" \
    --iters "${ITERS:-3}" --modes "${MODES:-eager,compile}" --compile-mode "${COMPILE_MODE:-default}" --compile-dynamic "${COMPILE_DYNAMIC:-0}" --out "$OUT/torch.json" 2> "$OUT/torch.err"
  rc=$?
  [ $rc -ne 0 ] && { status=1; echo "baseline exit status $rc"; tail -5 "$OUT/torch.err"; }
fi

if [ -f "$OUT/kiln.json" ] && [ -f "$OUT/torch.json" ]; then
  python3 scripts/bench_torch.py --table "$OUT/kiln.json" "$OUT/torch.json" | tee "$OUT/table.md"
fi
exit $status
