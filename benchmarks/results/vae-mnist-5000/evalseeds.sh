#!/usr/bin/env bash
# Re-evaluates both 5000-step models under other evaluation seeds (test binarisation, encoder and
# projection draws, k-NN entropy draws), without the classifier FD: the spread of the test metrics
# that comes from the evaluation's own randomness.
set -e
repo=$1 runs=$2
cd "$repo"
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
for name in baseline deq; do
  (
    for seed in 1 2; do
      dir="$runs/evalseed$seed-$name"
      mkdir -p "$dir" && cp -r "$runs/$name/checkpoint-meta.pth" "$runs/$name/checkpoints" "$runs/$name/metrics.jsonl" "$dir/"
      python main.py --config=configs/vae_$name.py --workdir="$dir" --config.device=cpu --config.training.n_iters=5000 \
        --config.seed=$seed --config.eval.classifier_fd_samples=0 --mode=eval
    done
  ) > "$runs/evalseeds-$name.log" 2>&1 &
done
wait
