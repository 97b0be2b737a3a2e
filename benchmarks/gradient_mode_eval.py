"""Re-evaluates trained DEQ checkpoints' score-matching metrics under each DEQ gradient mode.

    python -m benchmarks.gradient_mode_eval --row="table3/gaussian100/DEQ-SM DKEF" \
        --workdir=runs/paper-tables/table3_gaussian100_DEQ-SM_DKEF-seed0 --steps=1000,5000 \
        [--set eval.sm_loss_rows=100 ...] [--out=benchmarks/results/gradient-mode-eval/<workdir name>.json]

A DEQ model's score, and so its SM loss, depends on the gradient mode: phantom K=2 gives an
approximate score whose Hessian trace is not that of the model's density, while "unrolled" (solved
to `--exact-tol`) differentiates the true fixed point. For each checkpoint step this loads the
row's config (configs/paper_rows.py) with eval.checkpoint = step, sets every DEQ layer to each mode
in turn (after the `--set` overrides, e.g. the budget a paper-tables run used), and records what the row's task evaluates that depends on the score: the test SM loss and,
on data with a true density, the Fisher divergence. A training run that lowers its phantom SM loss
while its exact one rises is fitting the phantom approximation rather than the data. The
importance-sampled log Z (which needs no score) is skipped: eval.is_samples is set to its minimum.
The row's config has the default seed (42); pass the training run's seed (`--set seed=0` for a
paper-tables `-seed0` run), since the seed draws test-time randomness such as NICE's test
dequantisation noise, and values taken under another seed differ from the run's eval.json.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import torch

from benchmarks.harness import device_name
from benchmarks.run import parse_sets
from configs.overrides import apply_overrides
from configs.paper_rows import row_config
from main import model_transform_for
from score_matching.run import load_for_eval

ROOT = Path(__file__).resolve().parents[1]
SCORE_METRICS = ("test_sm_loss", "test_fisher_divergence")
MODES = ("phantom", "unrolled")  # phantom at the config's own settings; unrolled solved to exact_tol


def evaluate_modes(
    row: str, workdir: str, step: int, exact_tol: float, data_root: str = "", overrides: dict[str, Any] | None = None
) -> dict[str, dict[str, float]]:
    """{mode: {metric: value}} for the row's checkpoint at `step` in `workdir`, per gradient mode."""
    results = {}
    for mode in MODES:
        config = apply_overrides(row_config(row), overrides or {})
        config.deq.grad = mode
        if mode == "unrolled":
            config.deq.tol = exact_tol
        config.eval.checkpoint = str(step)
        config.eval.is_samples = config.eval.is_max_samples = 2
        config.eval.is_proposal = "q0"
        if data_root:
            config.data.root = data_root
        task, _, loaded = load_for_eval(config, workdir, model_transform_for(config))
        if loaded != step:
            raise ValueError(f"asked for checkpoint step {step} in {workdir}, loaded step {loaded}")
        if task.prepare_eval is not None:
            task.prepare_eval(task.model)
        metrics = task.evaluate(task.model)
        results[mode] = {key: metrics[key] for key in SCORE_METRICS if key in metrics}
    return results


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--row", required=True, help="a row of configs/paper_rows.py with DEQ layers")
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--steps", required=True, help="comma-separated checkpoint steps")
    parser.add_argument("--exact-tol", type=float, default=1e-6)
    parser.add_argument("--data-root", default="")
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                        help="config override, e.g. seed=0 or eval.batch_size=5 (value parsed as JSON, else a "
                             "string); repeatable")
    parser.add_argument("--out", default="", help="default: benchmarks/results/gradient-mode-eval/<workdir name>.json")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    steps = [int(s) for s in args.steps.split(",")]
    overrides = parse_sets(args.set)
    result: dict[str, Any] = {
        "analysis": "gradient-mode-eval", "row": args.row, "workdir": args.workdir, "exact_tol": args.exact_tol,
        "overrides": overrides,
        "device": device_name(torch.device("cpu")), "torch": torch.__version__,
        "steps": {str(step): evaluate_modes(args.row, args.workdir, step, args.exact_tol, args.data_root, overrides)
                  for step in steps},
    }
    out = Path(args.out or ROOT / "benchmarks" / "results" / "gradient-mode-eval" / f"{Path(args.workdir).name}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")
    print(json.dumps(result["steps"], indent=2))


if __name__ == "__main__":
    main(sys.argv[1:])
