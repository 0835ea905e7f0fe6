#!/usr/bin/env bash
# bench-vs-torch.sh: on a GPU machine, run `kiln bench --models synthetic:sd15`
# and the PyTorch + diffusers baseline (scripts/bench_torch.py: the same
# architecture with random fp16 weights, eager and torch.compile) in one go
# at the same batch sizes, steps and guidance, and write one table of ratios.
#
#   scripts/bench-vs-torch.sh                       # builds kiln with go
#   KILN=path/to/kiln scripts/bench-vs-torch.sh      # or a prebuilt binary
#       (KILN may also name a kiln.xz, decompressed to $TMPDIR)
#
# Environment: OUT (results folder, default out/bench-vs-torch), BATCHES
# (default 1,4,8,16), STEPS (20), GUIDANCE (7.5), ITERS (3), MODES
# (eager,compile), COMPILE_MODE (default), KILN_MODEL (synthetic:sd15),
# DIFFUSERS (a diffusers src/ folder or a .tgz of src/; default: whatever
# PYTHONPATH finds), KILN_PROFILE=1 (add the per-kernel breakdown),
# TORCH_TIMEOUT (seconds for the baseline, default 420), SKIP_KILN=1,
# SKIP_TORCH=1. Results: $OUT/kiln.json, $OUT/torch.json, $OUT/table.md.
set -uo pipefail
cd "$(dirname "$0")/.."
root="$PWD"
OUT="${OUT:-$root/out/bench-vs-torch}"
mkdir -p "$OUT"
BATCHES="${BATCHES:-1,4,8,16}"
STEPS="${STEPS:-20}"
GUIDANCE="${GUIDANCE:-7.5}"
status=0

nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>&1 | tee "$OUT/nvidia-smi.txt"

if [ "${SKIP_KILN:-0}" != 1 ]; then
  KILN="${KILN:-}"
  if [ -z "$KILN" ]; then
    command -v go >/dev/null || { echo "bench-vs-torch: neither go nor KILN" >&2; exit 2; }
    KILN="$OUT/kiln"
    go build -o "$KILN" ./cmd/kiln || exit 1
  elif [[ "$KILN" == *.xz ]]; then
    dst="${TMPDIR:-/tmp}/kiln-bench"
    xz -dc "$KILN" > "$dst" 2>/dev/null ||
      python3 -c 'import lzma, shutil, sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[2], "wb"))' "$KILN" "$dst"
    chmod +x "$dst"
    KILN="$dst"
  fi
  prof=()
  [ "${KILN_PROFILE:-0}" = 1 ] && prof=(--profile)
  echo "== kiln bench (${KILN_MODEL:-synthetic:sd15}, batches $BATCHES)"
  timeout "${KILN_TIMEOUT:-300}" "$KILN" bench --models "${KILN_MODEL:-synthetic:sd15}" --batch-sizes "$BATCHES" --steps "$STEPS" \
    --guidance "$GUIDANCE" --iterations "${ITERS:-3}" "${prof[@]}" --output "$OUT/kiln.json" > "$OUT/kiln.txt" 2> "$OUT/kiln.err"
  rc=$?
  [ $rc -ne 0 ] && { status=1; echo "kiln bench exit status $rc"; tail -5 "$OUT/kiln.err"; }
  head -12 "$OUT/kiln.txt"
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
    --iters "${ITERS:-3}" --modes "${MODES:-eager,compile}" --compile-mode "${COMPILE_MODE:-default}" --out "$OUT/torch.json" 2> "$OUT/torch.err"
  rc=$?
  [ $rc -ne 0 ] && { status=1; echo "baseline exit status $rc"; tail -5 "$OUT/torch.err"; }
fi

if [ -f "$OUT/kiln.json" ] && [ -f "$OUT/torch.json" ]; then
  python3 scripts/bench_torch.py --table "$OUT/kiln.json" "$OUT/torch.json" | tee "$OUT/table.md"
fi
exit $status
