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
#   MODEL=sdxl scripts/bench-vs-torch.sh      # SDXL 1.0 base at 1024², CFG 5,
#       batches 1,4 (synthetic:sdxl against bench_torch.py --model sdxl)
#
# Environment: OUT (results folder, default out/bench-vs-torch), MODEL (sd15
# or sdxl), BATCHES (default 1,4,8,16; sdxl 1,4), STEPS (20), GUIDANCE (7.5;
# sdxl 5), ITERS (3), MODES
# (eager,compile), COMPILE_MODE (default), COMPILE_DYNAMIC=1 (one compile
# with a dynamic batch instead of ~60 s per batch size), KILN_MODEL (synthetic:sd15),
# DIFFUSERS (a diffusers src/ folder or a .tgz of src/; default: whatever
# PYTHONPATH finds), KILN_PROFILE=1 (add the per-kernel breakdown),
# TORCH_TIMEOUT (seconds for the baseline, default 420), SKIP_KILN=1,
# SKIP_TORCH=1, OVERLAP_COMPILE=1 (start the torch.compile process first,
# on the CPU cores COMPILE_CPUS (default 4-), so that its compilations
# overlap Kiln's and eager PyTorch's timings, which run on KILN_CPUS
# (default 0-3); it times its compiled models only once the eager process
# is done, and its warm-up runs are its only GPU work before that).
# Results: $OUT/kiln.json, $OUT/torch.json (or torch-eager.json and
# torch-compile.json), $OUT/table.md.
set -uo pipefail
cd "$(dirname "$0")/.."
root="$PWD"
OUT="${OUT:-$root/out/bench-vs-torch}"
mkdir -p "$OUT" && OUT="$(cd "$OUT" && pwd)"
MODEL="${MODEL:-sd15}"
case "$MODEL" in
sd15) BATCHES="${BATCHES:-1,4,8,16}"; GUIDANCE="${GUIDANCE:-7.5}"; KILN_MODEL="${KILN_MODEL:-synthetic:sd15}" ;;
sdxl) BATCHES="${BATCHES:-1,4}"; GUIDANCE="${GUIDANCE:-5}"; KILN_MODEL="${KILN_MODEL:-synthetic:sdxl}" ;;
*) echo "bench-vs-torch: MODEL must be sd15 or sdxl" >&2; exit 2 ;;
esac
STEPS="${STEPS:-20}"
status=0
torch_files=()

nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>&1 | tee "$OUT/nvidia-smi.txt"

unxz() { # $1: file.xz → a decompressed executable in $TMPDIR
  local dst="${TMPDIR:-/tmp}/$(basename "${1%.xz}")-bench"
  xz -dc "$1" > "$dst" 2>/dev/null ||
    python3 -c 'import lzma, shutil, sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[2], "wb"))' "$1" "$dst"
  chmod +x "$dst"
  echo "$dst"
}

torch_args=(--model "$MODEL" --batches "$BATCHES" --steps "$STEPS" --guidance "$GUIDANCE" --iters "${ITERS:-3}"
  --compile-mode "${COMPILE_MODE:-default}" --compile-dynamic "${COMPILE_DYNAMIC:-0}")
if [ "${SKIP_TORCH:-0}" != 1 ]; then
  d="${DIFFUSERS:-}"
  if [[ "$d" == *.tgz || "$d" == *.tar.gz ]]; then
    x="${TMPDIR:-/tmp}/diffusers-src"
    mkdir -p "$x" && tar xzf "$d" -C "$x" && d="$x/src"
  fi
  [ -n "$d" ] && export PYTHONPATH="$d${PYTHONPATH:+:$PYTHONPATH}"
fi
pin=()
if [ "${OVERLAP_COMPILE:-0}" = 1 ] && [ "${SKIP_TORCH:-0}" != 1 ]; then
  ncpu="$(nproc)"
  pin=(taskset -c "${KILN_CPUS:-0-3}")
  rm -f "$OUT/gpu-free"
  echo "== torch.compile process (CPUs ${COMPILE_CPUS:-4-$((ncpu - 1))}), overlapping the warm-ups"
  TORCHINDUCTOR_COMPILE_THREADS="${COMPILE_THREADS:-$((ncpu - 4))}" timeout "${TORCH_TIMEOUT:-420}" taskset -c "${COMPILE_CPUS:-4-$((ncpu - 1))}" \
    python3 scripts/bench_torch.py "${torch_args[@]}" --modes compile --wait-file "$OUT/gpu-free" --out "$OUT/torch-compile.json" \
    > "$OUT/torch-compile.txt" 2> "$OUT/torch-compile.err" &
  compile_pid=$!
fi

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
  echo "== kiln bench ($KILN_MODEL, batches $BATCHES)"
  if [ -n "$KILN" ]; then
    prof=()
    [ "${KILN_PROFILE:-0}" = 1 ] && prof=(--profile)
    timeout "${KILN_TIMEOUT:-300}" "${pin[@]}" "$KILN" bench --models "$KILN_MODEL" --batch-sizes "$BATCHES" --steps "$STEPS" \
      --guidance "$GUIDANCE" --iterations "${ITERS:-3}" "${prof[@]}" --output "$OUT/kiln.json" > "$OUT/kiln.txt" 2> "$OUT/kiln.err"
  else
    (cd cuda && KILN_BENCH=1 KILN_BENCH_MODELS="$KILN_MODEL" KILN_BENCH_BATCHES="$BATCHES" KILN_BENCH_STEPS="$STEPS" KILN_BENCH_GUIDANCE="$GUIDANCE" \
      KILN_BENCH_ITERS="${ITERS:-3}" KILN_BENCH_PROFILE="${KILN_PROFILE:-0}" KILN_BENCH_OUT="$OUT/kiln.json" \
      timeout "${KILN_TIMEOUT:-300}" "${pin[@]}" "$KILN_TEST" -test.run 'TestGPUBench$' -test.v -test.timeout 0) > "$OUT/kiln.txt" 2> "$OUT/kiln.err"
  fi
  rc=$?
  [ $rc -ne 0 ] && { status=1; echo "kiln bench exit status $rc"; tail -5 "$OUT/kiln.err"; }
  grep -E "^(synthetic|model)" "$OUT/kiln.txt" | head -12
fi

if [ "${SKIP_TORCH:-0}" != 1 ] && [ -n "${compile_pid:-}" ]; then
  echo "== PyTorch eager (CPUs ${KILN_CPUS:-0-3}); then the compiled process times its models"
  timeout "${EAGER_TIMEOUT:-${TORCH_TIMEOUT:-420}}" "${pin[@]}" python3 scripts/bench_torch.py "${torch_args[@]}" --modes eager \
    --done-file "$OUT/gpu-free" --out "$OUT/torch-eager.json" 2> "$OUT/torch-eager.err"
  rc=$?
  touch "$OUT/gpu-free"
  [ $rc -ne 0 ] && { status=1; echo "eager baseline exit status $rc"; tail -5 "$OUT/torch-eager.err"; }
  wait "$compile_pid"
  rc=$?
  cat "$OUT/torch-compile.txt"
  [ $rc -ne 0 ] && { status=1; echo "compiled baseline exit status $rc"; tail -5 "$OUT/torch-compile.err"; }
  for f in torch-eager.json torch-compile.json; do [ -f "$OUT/$f" ] && torch_files+=("$OUT/$f"); done
elif [ "${SKIP_TORCH:-0}" != 1 ]; then
  echo "== PyTorch baseline (${MODES:-eager,compile})"
  timeout "${TORCH_TIMEOUT:-420}" python3 scripts/bench_torch.py "${torch_args[@]}" --modes "${MODES:-eager,compile}" --out "$OUT/torch.json" 2> "$OUT/torch.err"
  rc=$?
  [ $rc -ne 0 ] && { status=1; echo "baseline exit status $rc"; tail -5 "$OUT/torch.err"; }
  [ -f "$OUT/torch.json" ] && torch_files+=("$OUT/torch.json")
fi

if [ -f "$OUT/kiln.json" ] && [ ${#torch_files[@]} -gt 0 ]; then
  python3 scripts/bench_torch.py --table "$OUT/kiln.json" "${torch_files[@]}" | tee "$OUT/table.md"
fi
exit $status
