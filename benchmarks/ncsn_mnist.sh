#!/usr/bin/env bash
# The equal-budget NCSN comparison on MNIST: RefineNet, TwoRes, TwoRes as deep as the DEQ, and the
# DEQ NCSN with implicit gradients, phantom K = 2 (the paper's setting) and phantom K = 5, all with
# the quick-start recipe (configs/ncsn_twores.py), the same seed, steps, batch and sampler.
#
#   benchmarks/ncsn_mnist.sh OUTPUT_DIR [RUNS_DIR]   (RUNS_DIR: working directories, default runs/ncsn-mnist)
#
# Each variant is trained, evaluated (test DSM loss, MNIST classifier FD and label statistics of
# FD_SAMPLES samples) and its 64-sample grid drawn; OUTPUT_DIR/<variant>/ gets eval.json,
# metrics.jsonl, the grid and commands.txt. Run again, it resumes: a variant whose working directory
# holds an evaluation at STEPS is only copied, a killed training resumes from its checkpoint. Then `python -m benchmarks.ncsn_mnist_report OUTPUT_DIR`
# writes the side-by-side grid picture and the table. Environment settings and their defaults:
# DEVICE=cpu STEPS=4500 SEED=42 FD_SAMPLES=1000 LANES=2 (variants trained at once, one torch thread
# each) DEEP_TWIN_BLOCKS=5 (the blocks of the deep twin: the DEQ's mean forward iterations in
# training, 4.9 in the quick start, rounded) and VARIANTS (a subset, space-separated).
set -u -o pipefail
(( $# >= 1 )) || { echo "usage: $0 OUTPUT_DIR [RUNS_DIR]"; exit 2; }
RESULTS=$(realpath -m "$1")
RUNS=$(realpath -m "${2:-runs/ncsn-mnist}")
cd "$(dirname "$0")/.."

DEVICE=${DEVICE:-cpu}
STEPS=${STEPS:-4500}
SEED=${SEED:-42}
FD_SAMPLES=${FD_SAMPLES:-1000}
LANES=${LANES:-2}
DEEP_TWIN_BLOCKS=${DEEP_TWIN_BLOCKS:-5}
read -r -a VARIANTS <<< "${VARIANTS:-refinenet twores twores-deep deq-implicit deq-K2 deq-K5}"
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
mkdir -p "$RESULTS" "$RUNS"

variant_flags() {  # the config file and flags of one variant
  case $1 in
    refinenet) echo "configs/ncsn_baseline.py" ;;
    twores) echo "configs/ncsn_twores.py" ;;
    twores-deep) echo "configs/ncsn_twores.py --config.model.deq_res_blocks=$DEEP_TWIN_BLOCKS" ;;
    deq-implicit) echo "configs/ncsn_deq.py --config.deq.grad=implicit" ;;
    deq-K2) echo "configs/ncsn_deq.py --config.deq.grad=phantom --config.deq.phantom_steps=2" ;;
    deq-K5) echo "configs/ncsn_deq.py --config.deq.grad=phantom --config.deq.phantom_steps=5" ;;
    *) echo "unknown variant '$1'; valid: refinenet twores twores-deep deq-implicit deq-K2 deq-K5" >&2; return 2 ;;
  esac
}

evaluated() {  # evaluated EVAL_JSON: whether it exists and holds an evaluation at step STEPS
  [[ -f $1 ]] && python -c "import json, sys; sys.exit(json.load(open('$1'))['step'] != $STEPS)"
}

run_variant() {
  local name=$1 flags train
  flags=$(variant_flags "$name") || return 2
  read -r config rest <<< "$flags"
  train="python main.py --config=$config --workdir=$RUNS/$name $rest --config.device=$DEVICE --config.seed=$SEED
         --config.training.n_iters=$STEPS --config.training.snapshot_freq=$STEPS --config.training.sample_freq=$STEPS
         --config.eval.classifier_fd_samples=$FD_SAMPLES"
  train=$(echo "$train" | tr -s ' \n' ' ')
  if evaluated "$RUNS/$name/eval.json"; then
    echo "$name: evaluated at step $STEPS already, results copied"
  else  # a killed training resumes from its checkpoint; the evaluation runs again
    { $train && $train --mode=eval; } >> "$RUNS/$name.log" 2>&1 || { echo "$name: failed (see $RUNS/$name.log)"; return 1; }
  fi
  mkdir -p "$RESULTS/$name"
  cp "$RUNS/$name"/{eval.json,metrics.jsonl,config.json} "$RESULTS/$name/"
  cp "$RUNS/$name/samples/step_$STEPS.png" "$RESULTS/$name/samples_step_$STEPS.png"
  printf '%s\n' "$train" "$train --mode=eval" > "$RESULTS/$name/commands.txt"
  echo "$name: done"
}

# The classifier behind the FD, trained once here rather than by two evaluations at the same time.
python -c "from score_matching.evaluation.mnist_classifier import default_classifier_path as p; raise SystemExit(not p().is_file())" \
  || python -m score_matching.evaluation.mnist_classifier || exit 1

status=0
for (( lane = 0; lane < LANES; lane++ )); do
  (
    lane_status=0
    for (( i = lane; i < ${#VARIANTS[@]}; i += LANES )); do run_variant "${VARIANTS[$i]}" || lane_status=1; done
    exit $lane_status
  ) &
done
for job in $(jobs -p); do wait "$job" || status=1; done
exit $status
