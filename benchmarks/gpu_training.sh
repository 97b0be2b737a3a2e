#!/usr/bin/env bash
# Trains on one GPU, all at once, the paper rows that a small CPU cannot train at useful budgets.
#
#   benchmarks/gpu_training.sh OUTPUT_DIR [RUNS_DIR]   (RUNS_DIR: working directories, default runs/gpu-training)
#
# 1. Table 4, NICE on MNIST (SSM and DEQ-SSM rows): NICE_STEPS[0] iterations for NICE_SEEDS, then seed
#    0 trained on to each further NICE_STEPS entry, with `benchmarks.paper_tables run` and `report`
#    (OUTPUT_DIR/table4-DEVICE[-N]/).
# 2. The RefineNet, TwoRes and DEQ NCSN configs on MNIST at ngf NGF and batch 128, NCSN_STEPS
#    iterations each, evaluated (test SSM-VR loss, MNIST classifier FD, a sample grid) at their last
#    step (OUTPUT_DIR/ncsn-mnist-DEVICE/<model>/).
# 3. SSM VAE against DEQ-SSM VAE with phantom K = 2 (deq) and K = 5 (deq-K5) on MNIST, VAE_STEPS
#    iterations for each of VAE_SEEDS, each DEQ also re-scored with exact derivatives
#    (OUTPUT_DIR/vae-mnist-5000-DEVICE/seed<k>/<model>/).
# Each result folder gets the commands that made it (commands.txt). MNIST is read from
# $SCORE_MATCHING_DATA, the MNIST classifier from $SCORE_MATCHING_CACHE. Environment settings and
# their defaults: DEVICE=cuda NICE_STEPS="1000 3000" NICE_SEEDS=0,1,2 NGF=32 NCSN_STEPS=5000
# VAE_STEPS=5000 VAE_SEEDS="45 46", and EXTRA_NCSN_FLAGS / EXTRA_VAE_FLAGS appended to those runs.
set -u -o pipefail
(( $# >= 1 )) || { echo "usage: $0 OUTPUT_DIR [RUNS_DIR]"; exit 2; }
RESULTS=$(realpath -m "$1")
RUNS=$(realpath -m "${2:-runs/gpu-training}")
cd "$(dirname "$0")/.."

DEVICE=${DEVICE:-cuda}
NGF=${NGF:-32}
NCSN_STEPS=${NCSN_STEPS:-5000}
read -r -a NICE_STEPS <<< "${NICE_STEPS:-1000 3000}"  # the first for NICE_SEEDS, the others for seed 0
NICE_SEEDS=${NICE_SEEDS:-0,1,2}
EXTRA_NCSN_FLAGS=${EXTRA_NCSN_FLAGS:-}
VAE_STEPS=${VAE_STEPS:-5000}
read -r -a VAE_SEEDS <<< "${VAE_SEEDS:-45 46}"
EXTRA_VAE_FLAGS=${EXTRA_VAE_FLAGS:-}
VAE_RESULTS=$RESULTS/vae-mnist-5000-$DEVICE
NCSN_RESULTS=$RESULTS/ncsn-mnist-$DEVICE
# One CPU thread per process: up to 15 processes share the machine, and their work is on the GPU.
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
mkdir -p "$RESULTS" "$RUNS"
exec > >(tee "$RESULTS/gpu-training.log") 2>&1

if [[ $DEVICE == cuda ]]; then
  python -c "import torch; assert torch.cuda.is_available(), 'torch sees no CUDA device'; print('GPU:', torch.cuda.get_device_name(), '| torch', torch.__version__)" || exit 1
fi

nice_stage() {  # nice_stage N_ITERS SEEDS JOBS OUT_DIR
  echo "== NICE to $1 iterations, seeds $2"
  python -m benchmarks.paper_tables run --group=nice --device="$DEVICE" --n_iters="$1" --seeds="$2" \
    --jobs="$3" --runs_root="$RUNS/nice" --out_dir="$4" || { echo "== NICE to $1 iterations: failed"; return 1; }
  python -m benchmarks.paper_tables report --runs_dir="$4" --stem="$4/report"
}

nice_part() {
  local steps
  nice_stage "${NICE_STEPS[0]}" "$NICE_SEEDS" 6 "$RESULTS/table4-$DEVICE" || return 1
  for steps in "${NICE_STEPS[@]:1}"; do
    nice_stage "$steps" 0 2 "$RESULTS/table4-$DEVICE-$steps" || return 1
  done
}

NCSN_FLAGS=$(echo "--config.device=$DEVICE --config.model.ngf=$NGF --config.training.batch_size=128
  --config.training.n_iters=$NCSN_STEPS --config.training.eval_freq=500 --config.training.sample_freq=0
  --config.eval.classifier_fd_samples=1000 --config.eval.n_steps_each=100 --config.eval.batch_size=500
  --config.sampling.n_samples=64 --config.sampling.n_steps_each=100 $EXTRA_NCSN_FLAGS" | tr -s ' \n' ' ')

ncsn_part() {
  local model
  echo "== NCSN: RefineNet, TwoRes and DEQ on MNIST, ngf $NGF, batch 128, $NCSN_STEPS iterations each"
  for model in baseline twores deq; do
    (
      train="python main.py --config=configs/ncsn_$model.py --workdir=$RUNS/ncsn/$model $NCSN_FLAGS"
      $train && $train --mode=eval && $train --mode=sample || { echo "NCSN $model: failed"; exit 1; }
      mkdir -p "$NCSN_RESULTS/$model"
      cp "$RUNS/ncsn/$model"/{eval.json,metrics.jsonl} "$RUNS/ncsn/$model"/samples/sample_step_* "$NCSN_RESULTS/$model/"
      printf '%s\n' "$train" "$train --mode=eval" "$train --mode=sample" > "$NCSN_RESULTS/$model/commands.txt"
      echo "NCSN $model: done"
    ) > "$RUNS/ncsn-$model.log" 2>&1 &
  done
  wait
  tail -n 1 "$RUNS"/ncsn-*.log
}

vae_part() {
  local seed model
  echo "== VAE: SSM VAE, DEQ-SSM VAE (K = 2) and DEQ-SSM VAE (K = 5) on MNIST, $VAE_STEPS iterations, seeds ${VAE_SEEDS[*]}"
  for seed in "${VAE_SEEDS[@]}"; do
    for model in baseline deq deq-K5; do
      (
        config=${model%-K5} model_flags=
        [[ $model == deq-K5 ]] && model_flags=--config.deq.phantom_steps=5
        train="python main.py --config=configs/vae_$config.py --workdir=$RUNS/vae/seed$seed/$model --config.device=$DEVICE
               --config.seed=$seed --config.training.n_iters=$VAE_STEPS $model_flags $EXTRA_VAE_FLAGS"
        train=$(echo "$train" | tr -s ' \n' ' ')
        $train && $train --mode=eval || { echo "VAE $model seed $seed: failed"; exit 1; }
        folder="$VAE_RESULTS/seed$seed/$model"
        mkdir -p "$folder"
        cp "$RUNS/vae/seed$seed/$model"/{eval.json,metrics.jsonl} "$folder/"
        cp "$RUNS/vae/seed$seed/$model"/samples/step_*.png "$folder/" 2>/dev/null  # none for a run shorter than sample_freq
        printf '%s\n' "$train" "$train --mode=eval" > "$folder/commands.txt"
        if [[ $model != baseline ]]; then  # the same evaluation with the DEQ's exact derivatives
          exact="$train --mode=eval --config.eval.classifier_fd_samples=0 --config.deq.grad=unrolled --config.deq.tol=1e-6"
          $exact && cp "$RUNS/vae/seed$seed/$model/eval.json" "$folder/exact-derivatives-eval.json" \
            && echo "$exact" >> "$folder/commands.txt" || echo "VAE $model seed $seed: exact re-scoring failed"
        fi
        echo "VAE $model seed $seed: done"
      ) > "$RUNS/vae-seed$seed-$model.log" 2>&1 &
    done
  done
  wait
  tail -n 1 "$RUNS"/vae-seed*.log
}

# Wait for these three by pid: a bare `wait` would also wait for the log's `tee`, which never ends.
nice_part & nice_pid=$!
ncsn_part & ncsn_pid=$!
vae_part & vae_pid=$!
status=0
for pid in "$nice_pid" "$ncsn_pid" "$vae_pid"; do wait "$pid" || status=1; done
echo "== done, status $status"
exit $status
