#!/usr/bin/env bash
set -e
cd /work/main
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 SCORE_MATCHING_DATA=/work/shared/data
for name in baseline deq; do
  start=$(date +%s)
  python main.py --config=configs/vae_$name.py --workdir=/tmp/vae-mnist/$name --config.device=cpu
  python main.py --config=configs/vae_$name.py --workdir=/tmp/vae-mnist/$name --config.device=cpu --mode=eval
  echo "$name wall seconds (train + eval): $(( $(date +%s) - start ))"
done
