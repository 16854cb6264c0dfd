#!/usr/bin/env bash
# The GPU checks of issue 18 in one go, for a session that has a CUDA machine (about 3-5 minutes;
# every part has its own time limit, the total stays under 9.5 minutes):
#   1. the CUDA tests (every test with "cuda" in its name; skipped without a GPU),
#   2. bench_activation_max.py --device cuda --batch 64 --sizes 224 (the batched AM step against
#      the bare batched forward+backward: "thr ours/floor", target >= 0.9), then the same with
#      the loss read at every step (--read-every 1, the loop before the lazy losses) and with
#      torch.compile (--compile default), to decide whether compile may become the CUDA default,
#   3. `cnnvis atlas build` of one layer, if this checkout has the command.
# Outputs (logs, the tables) go to $OUT if set, else ./gpu_check_out.
#
#   bash benchmarks/gpu_check.sh            # from the repository root
#   PYTHON=/path/to/python bash benchmarks/gpu_check.sh
set -u
cd "$(dirname "$0")/.."
PY="${PYTHON:-python}"
OUTDIR="${OUT:-$PWD/gpu_check_out}"
mkdir -p "$OUTDIR"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
SUMMARY="$OUTDIR/summary.txt"
: >"$SUMMARY"
start=$(date +%s)

part() {  # part NAME LIMIT_S COMMAND...: run with a time limit, log to $OUTDIR/NAME.log
  local name=$1 limit=$2
  shift 2
  local t0=$(date +%s)
  timeout --kill-after=10 "$limit" "$@" >"$OUTDIR/$name.log" 2>&1
  local rc=$?
  echo "$name: rc=$rc, $(( $(date +%s) - t0 )) s (limit $limit s)" | tee -a "$SUMMARY"
}

{
  date -u
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>&1
  "$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, \
'available', torch.cuda.is_available())"
} 2>&1 | tee -a "$SUMMARY"

part cuda_tests 150 "$PY" -m pytest -p no:cacheprovider -q -rs -k cuda \
  tests/core tests/models tests/test_findings.py tests/widgets/test_reliability.py \
  tests/widgets/test_reliability_widgets.py
tail -n 3 "$OUTDIR/cuda_tests.log" | tee -a "$SUMMARY"

part bench_am 150 "$PY" benchmarks/bench_activation_max.py --device cuda --batch 64 --sizes 224
part bench_am_read_every_1 100 "$PY" benchmarks/bench_activation_max.py --device cuda \
  --batch 64 --sizes 224 --rounds 3 --read-every 1
part bench_am_compile 120 "$PY" benchmarks/bench_activation_max.py --device cuda --batch 64 \
  --sizes 224 --rounds 3 --compile default
for b in bench_am bench_am_read_every_1 bench_am_compile; do
  echo "== $b" >>"$SUMMARY"
  grep -A 8 "^nominal" "$OUTDIR/$b.log" >>"$SUMMARY" || tail -n 5 "$OUTDIR/$b.log" >>"$SUMMARY"
done

if "$PY" -m cnnvis_widgets.cli atlas build --help >/dev/null 2>&1; then
  part atlas_build 90 "$PY" -m cnnvis_widgets.cli atlas build --model efficientnet_lite0 \
    --layers _blocks.8 --out "$OUTDIR/atlas"
else
  echo "atlas_build: skipped (no 'cnnvis atlas build' in this checkout)" | tee -a "$SUMMARY"
fi

echo "total: $(( $(date +%s) - start )) s" | tee -a "$SUMMARY"
