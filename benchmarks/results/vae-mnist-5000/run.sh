#!/usr/bin/env bash
# SSM VAE and DEQ-SSM VAE on MNIST, 5000 iterations each, trained side by side (one core each).
# Usage: run.sh REPO_DIR RUNS_DIR   (run from a snapshot of the repo; data under $SCORE_MATCHING_DATA)
set -e
repo=$1 runs=$2
cd "$repo"
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
for name in baseline deq; do
  (
    start=$(date +%s)
    python main.py --config=configs/vae_$name.py --workdir="$runs/$name" --config.device=cpu --config.training.n_iters=5000
    python main.py --config=configs/vae_$name.py --workdir="$runs/$name" --config.device=cpu --config.training.n_iters=5000 --mode=eval
    echo "$name wall seconds (train + eval): $(( $(date +%s) - start ))"
  ) > "$runs/$name.log" 2>&1 &
done
wait
