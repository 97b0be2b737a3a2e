#!/usr/bin/env bash
# Runs the CUDA tests, then benchmark suites at full (paper) size on the GPU, inside a time limit.
#
#   benchmarks/gpu.sh [TOTAL_SECONDS [SUITE ...]]   (default: 540 s, every suite)
#
# Suites run in the order given (default: most important first: depth, ncsn, vae, solver, grad,
# losses, ncsn_sampling; the last needs MNIST under $SCORE_MATCHING_DATA or ./data, as the device
# cannot download it). Each suite gets its share of the limit (SHARE, renormalised over the suites
# asked for) plus whatever earlier suites left unused, as `benchmarks.run --budget`: variants that
# do not fit are recorded as not run, and the suite's files are still written (`timeout` only
# guards against a hang, with GRACE seconds for writing and plotting). Results go to
# benchmarks/results/<suite>-cuda.{json,md,png}; when $OUT is set (the device tool's output
# folder) they are packed, with this run's log, into $OUT/cuda-results.tar.gz after every suite,
# so that a run cut short still returns what it finished.
set -u -o pipefail
cd "$(dirname "$0")/.."

TOTAL=${1:-540}
shift $(( $# > 0 ? 1 : 0 ))
SUITES=("$@")
(( ${#SUITES[@]} )) || SUITES=(depth ncsn vae solver grad losses ncsn_sampling)
declare -A SHARE=([depth]=25 [ncsn]=20 [vae]=15 [solver]=10 [grad]=10 [losses]=10 [ncsn_sampling]=10)
MIN_SECONDS=20  # below this a suite cannot even start its processes; skip it
GRACE=30
TEST_SECONDS=120

start=$(date +%s)
log=benchmarks/results/gpu-run.log
mkdir -p benchmarks/results
exec > >(tee "$log") 2>&1

pack() {
  [[ -n "${OUT:-}" ]] && tar czf "$OUT/cuda-results.tar.gz" $(ls benchmarks/results/*-cuda.* 2>/dev/null) "$log"
  return 0
}

python -c "import torch; assert torch.cuda.is_available(), 'torch sees no CUDA device'; print('GPU:', torch.cuda.get_device_name(), '| torch', torch.__version__)" || exit 1

total_share=0
for suite in "${SUITES[@]}"; do
  [[ -n "${SHARE[$suite]:-}" ]] || { echo "unknown suite '$suite'; valid: ${!SHARE[*]}"; exit 2; }
  total_share=$(( total_share + SHARE[$suite] ))
done

status=0
echo "== CUDA tests"
timeout "$TEST_SECONDS" python -m pytest -q -p no:cacheprovider tests/test_cuda.py || status=1
pack

budget=$(( $(date +%s) - start ))  # the suites share what the tests left of the limit
available=$(( TOTAL - budget ))
for suite in "${SUITES[@]}"; do
  budget=$(( budget + available * SHARE[$suite] / total_share ))
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
  pack
done
echo "== done in $(( $(date +%s) - start ))s, status $status"
pack
exit $status
