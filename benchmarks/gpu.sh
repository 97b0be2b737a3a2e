#!/usr/bin/env bash
# Runs the CUDA tests, then benchmark suites at full (paper) size on the GPU.
#
#   benchmarks/gpu.sh OUTPUT_DIR [SUITE ...]   (default: every suite, most important first)
#
# Each suite's <suite>-cuda.{json,md,png} and this run's log (gpu.log) go to OUTPUT_DIR.
# $BENCHMARK_FLAGS is passed to every `benchmarks.run` (e.g. "--budget=300 --repeats=3"). The
# ncsn_sampling suite needs MNIST under $SCORE_MATCHING_DATA or ./data.
set -u -o pipefail
(( $# >= 1 )) || { echo "usage: $0 OUTPUT_DIR [SUITE ...]"; exit 2; }
out=$(realpath -m "$1")
shift
cd "$(dirname "$0")/.."
SUITES=("$@")
(( ${#SUITES[@]} )) || SUITES=(depth ncsn vae solver grad losses ncsn_sampling)
mkdir -p "$out"
exec > >(tee "$out/gpu.log") 2>&1

python -c "import torch; assert torch.cuda.is_available(), 'torch sees no CUDA device'; print('GPU:', torch.cuda.get_device_name(), '| torch', torch.__version__)" || exit 1
status=0
echo "== CUDA tests"
python -m pytest -q -p no:cacheprovider tests/test_cuda.py || status=1
for suite in "${SUITES[@]}"; do
  echo "== $suite"
  # shellcheck disable=SC2086  # BENCHMARK_FLAGS is a list of flags
  python -m benchmarks.run --suite="$suite" --device=cuda --out-dir="$out" ${BENCHMARK_FLAGS:-} || status=1
done
echo "== done, status $status"
exit $status
