#!/usr/bin/env bash
# Runs every benchmark suite at full (paper) size on the GPU, inside a time limit.
#
#   benchmarks/gpu.sh [TOTAL_SECONDS]        (default 540: fits one 10-minute device command)
#
# Suites run most important first (depth, ncsn, vae, solver, grad, losses, ncsn_sampling; the last needs
# MNIST under $SCORE_MATCHING_DATA or ./data, as the device cannot download it). Each suite gets a share of the
# limit (SHARE, in percent) plus whatever earlier suites left unused, as `benchmarks.run --budget`:
# variants that do not fit are recorded as not run, and the suite's files are still written
# (`timeout` only guards against a hang, with GRACE seconds for writing and plotting). Results go to
# benchmarks/results/<suite>-cuda.{json,md,png}; when $OUT is set (the device tool's output
# folder) they are also packed, with this run's log, into $OUT/cuda-results.tar.gz.
set -u -o pipefail
cd "$(dirname "$0")/.."

TOTAL=${1:-540}
SUITES=(depth ncsn vae solver grad losses ncsn_sampling)
declare -A SHARE=([depth]=25 [ncsn]=20 [vae]=15 [solver]=10 [grad]=10 [losses]=10 [ncsn_sampling]=10)
MIN_SECONDS=20  # below this a suite cannot even start its processes; skip it
GRACE=30

start=$(date +%s)
log=benchmarks/results/gpu-run.log
mkdir -p benchmarks/results
exec > >(tee "$log") 2>&1

python -c "import torch; assert torch.cuda.is_available(), 'torch sees no CUDA device'; print('GPU:', torch.cuda.get_device_name(), '| torch', torch.__version__)" || exit 1

status=0
budget=0
for suite in "${SUITES[@]}"; do
  budget=$(( budget + TOTAL * SHARE[$suite] / 100 ))
  elapsed=$(( $(date +%s) - start ))
  allowed=$(( budget - elapsed ))
  left=$(( TOTAL - elapsed ))
  (( allowed > left )) && allowed=$left
  if (( allowed < MIN_SECONDS )); then
    echo "== skipping $suite: only ${allowed}s of the limit left"
    status=1
    continue
  fi
  echo "== $suite (${allowed}s allowed)"
  if ! timeout $(( allowed + GRACE )) python -m benchmarks.run --suite="$suite" --device=cuda --budget="$allowed"; then
    echo "== $suite failed or ran out of time"
    status=1
  fi
done
echo "== done in $(( $(date +%s) - start ))s, status $status"

if [[ -n "${OUT:-}" ]]; then
  tar czf "$OUT/cuda-results.tar.gz" benchmarks/results/*-cuda.* "$log" 2>/dev/null
fi
exit $status
