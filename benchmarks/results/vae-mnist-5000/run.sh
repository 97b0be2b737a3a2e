#!/usr/bin/env bash
# SSM VAE and DEQ-SSM VAE on MNIST, 5000 iterations each, trained side by side (one core each).
# Usage: run.sh REPO_DIR RUNS_DIR [SEED]   (run from a snapshot of the repo; data under $SCORE_MATCHING_DATA)
# Without SEED the configs' seed (42) is used; with it, --config.seed=SEED sets the training seed and
# the evaluation's, and the runs go to RUNS_DIR/seed<SEED>/.
set -e
repo=$1 runs=$2 seed=${3:-}
cd "$repo"
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
seed_flag=
if [[ -n "$seed" ]]; then
  seed_flag="--config.seed=$seed" runs="$runs/seed$seed"
fi
mkdir -p "$runs"
for name in baseline deq; do
  (
    start=$(date +%s)
    python main.py --config=configs/vae_$name.py --workdir="$runs/$name" --config.device=cpu --config.training.n_iters=5000 $seed_flag
    python main.py --config=configs/vae_$name.py --workdir="$runs/$name" --config.device=cpu --config.training.n_iters=5000 $seed_flag --mode=eval
    echo "$name wall seconds (train + eval): $(( $(date +%s) - start ))"
  ) > "$runs/$name.log" 2>&1 &
done
wait
