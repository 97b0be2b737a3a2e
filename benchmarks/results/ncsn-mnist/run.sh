#!/usr/bin/env bash
# The three NCSN variants of paper table 5 on MNIST at one equal budget (CPU), two at a time.
# Usage: benchmarks/results/ncsn-mnist/run.sh [WORKROOT]   (from the repository root)
set -e
root=${1:-/tmp/ncsn-mnist}
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 SCORE_MATCHING_DATA=${SCORE_MATCHING_DATA:-../shared/data}
budget="--config.training.n_iters=2000 --config.training.eval_freq=500 --config.training.snapshot_freq=1000
        --config.training.sample_freq=1000 --config.eval.classifier_fd_samples=1000 --config.device=cpu"
one() {
  local name=$1 start
  start=$(date +%s)
  python main.py --config=configs/ncsn_$name.py --workdir=$root/$name $budget
  python main.py --config=configs/ncsn_$name.py --workdir=$root/$name $budget --mode=eval
  echo "$name wall seconds (train + eval): $(( $(date +%s) - start ))"
}
export -f one; export root budget
printf '%s\n' baseline twores deq | xargs -P 2 -I{} bash -c 'one {}'
