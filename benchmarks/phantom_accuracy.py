"""The paper's appendix C over a real training run: phantom (K=2) against exact gradients.

    python -m benchmarks.phantom_accuracy [--losses=sm,ssm] [--steps=1000] [--every=25]
        [--n-inducing=50] [--device=cpu] [--threads=1] [--data-root=DIR] [--out-dir=benchmarks/results]
        [--redraw]

The data root defaults to $SCORE_MATCHING_DATA, else ./data.

For each loss, trains `configs/dkef_deq.py` (DEQ-DKEF on UCI Parkinsons: every kernel's feature
net a dense DEQ, picard with relative tol 1e-4, phantom gradient K=2, Adam 1e-3, batch 32) with
that loss, for a reduced budget: `steps` steps and `n_inducing` inducing points instead of the
paper's 44,700 steps and 200 points (about five minutes per loss on one idle CPU core; the JSON
records the wall time, `seconds`). At steps 0, every, 2·every, …, steps, on the parameters before
that step's update and that step's batch, DKEF's training pipeline (α fitted on the first half of the batch, the loss on the second,
`split_batch_loss`) runs twice:
- phantom: the model as it trains (phantom K=2, float32, the training tolerance);
- exact: a float64 copy whose DEQ layers solve to `reference_tol` with grad="unrolled": autograd
  through every solver iteration, whose derivatives converge to implicit differentiation of the true
  fixed point as the iteration does (error ~ the tolerance). Unrolled rather than grad="implicit"
  because DKEF's α fit takes forward-mode derivatives of the feature nets (`torch.func.jvp`),
  which the implicit mode's autograd Function does not define.
Both use the loss with the per-dimension ("loop") Hessian trace for exact SM and, for SSM, the same Rademacher projections (a
generator seeded with the step). Recorded per point: for every row of the batch, the score's
relative error ‖s̃ − s‖/‖s‖ and cosine distance 1 − cos(s, s̃) (computed as ½‖ŝ − s̃/‖s̃‖‖², which
keeps its digits when the cosine is within 1e-7 of one), s̃ the phantom and s the exact score
under each one's own α; the cosine distance and relative error between the two loss gradients
over all parameters; and each DEQ layer's contraction factor ‖∂f/∂z‖₂ at z* on the batch
(`deq_plugin.contraction_factor`). The analysis runs on its own random streams, so the training
run is the one `main.py` would make for the same config.

This is one sequential training run per loss whose analysis points depend on the trajectory, not a
set of independent variants timed in fresh processes, so it is a module of its own rather than a
`benchmarks.run` suite. It writes `<out-dir>/phantom-accuracy-<device>.json` (+ .md) and a PNG of
histograms like the paper's figures 5–7 plus the trace of the contraction factor; `--redraw`
rewrites the .md and .png from an existing .json without training.
"""
from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import math
import statistics
import time
from pathlib import Path
from typing import Any, Callable

import matplotlib.pyplot as plt
import torch
from ml_collections import ConfigDict
from torch import Tensor, nn

from benchmarks.harness import device_name, resolve_device
from benchmarks.plots import save
from benchmarks.report import format_value
from configs.dkef_baseline import get_config as paper_config
from configs.dkef_deq import get_config
from configs.overrides import apply_overrides
from deq_plugin import DEQ, contraction_factor
from main import model_transform_for
from score_matching.batching import batch_indices
from score_matching.distributed import DistInfo
from score_matching.ema import ExponentialMovingAverage
from score_matching.losses import LOSSES
from score_matching.models.dkef import DKEF, split_batch_loss
from score_matching.optim import get_optimizer
from score_matching.run import get_step_fn, seed_everything
from score_matching.tasks import Task, build_task
from score_matching.tasks.common import loss_kwargs

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
CONFIG_FILE = "configs/dkef_deq.py"
LOSS_CHOICES = ("sm", "ssm", "ssm_vr")
LOSSES_WITH_PROJECTIONS = ("ssm", "ssm_vr")
SIGNIFICANT_DIGITS = 6  # per-row values are stored rounded, to keep the JSON readable
MIN_PLOTTED = 1e-16  # float64 resolution: smaller values (an exact zero) are drawn here on the log10 axis
REFERENCE_GRAD = "unrolled"  # the exact reference: autograd through a float64 solve to reference_tol


@dataclasses.dataclass(frozen=True)
class Settings:
    """The run's budget and the exact reference's solver settings."""

    steps: int = 1000
    every: int = 25
    n_inducing: int = 50
    reference_tol: float = 1e-10
    reference_max_iter: int = 500

    def __post_init__(self) -> None:
        if self.steps < 1 or self.every < 1 or self.n_inducing < 1:
            raise ValueError(f"steps, every and n_inducing must be >= 1, got {self.steps}, {self.every}, {self.n_inducing}")
        if not self.reference_tol > 0 or self.reference_max_iter < 1:
            raise ValueError(f"need reference_tol > 0 and reference_max_iter >= 1, got {self.reference_tol}, {self.reference_max_iter}")


def run_overrides(loss: str, settings: Settings, device: str) -> dict[str, Any]:
    """The fields of configs/dkef_deq.py this run changes, as "section.key": value."""
    if loss not in LOSS_CHOICES:
        raise ValueError(f"unknown loss {loss!r}; valid: {list(LOSS_CHOICES)}")
    return {"loss.name": loss, "model.n_inducing": settings.n_inducing, "training.n_iters": settings.steps,
            "device": device}


def run_config(overrides: dict[str, Any]) -> ConfigDict:
    """configs/dkef_deq.py with `overrides` ("section.key" or "key": value) applied."""
    return apply_overrides(get_config(), overrides)


def build_run(overrides: dict[str, Any], device: torch.device, data_root: str = "") -> tuple[ConfigDict, Task]:
    """The run's config and its task (data and the DEQ-DKEF, built as main.py builds them, seeded)."""
    config = run_config(overrides)
    config.data.root = data_root
    seed_everything(config.seed)
    return config, build_task(config, device, model_transform_for(config))


def analysis_loss(config: ConfigDict, seed: int) -> Callable[[Callable[[Tensor], Tensor], Tensor], Tensor]:
    """The run's loss for the comparison: exact SM with the loop trace; a projection loss with
    projections drawn from a fresh generator seeded with `seed` (the same draws on every call)."""
    kwargs = loss_kwargs(config)
    if config.loss.name == "sm":
        kwargs["trace"] = "loop"  # the reference trace: one backward pass per dimension
    loss = LOSSES.get(config.loss.name)

    def loss_fn(score_fn: Callable[[Tensor], Tensor], x: Tensor) -> Tensor:
        if config.loss.name in LOSSES_WITH_PROJECTIONS:
            return loss(score_fn, x, generator=torch.Generator(device=x.device).manual_seed(seed), **kwargs)
        return loss(score_fn, x, **kwargs)

    return loss_fn


def exact_copy(model: nn.Module, settings: Settings) -> nn.Module:
    """A float64 copy of `model` whose DEQ layers solve to the reference tol and differentiate through the
    iterations (grad="unrolled"), which at that tolerance is exact implicit differentiation to ~1e-10."""
    exact = copy.deepcopy(model).double()
    for deq in exact.modules():
        if isinstance(deq, DEQ):
            deq.grad = REFERENCE_GRAD
            deq.tol = settings.reference_tol
            deq.max_iter = settings.reference_max_iter
    return exact


def score_and_gradient(model: DKEF, x: Tensor, loss_fn: Callable) -> tuple[Tensor, Tensor, float]:
    """DKEF's training pipeline on x (`split_batch_loss`): the score at every row under the α it fits
    on the first half, the gradient over all parameters of the loss on the second half (flattened),
    and the loss."""
    params = list(model.parameters())
    score_fns = []

    def keeping_score_fn(score_fn: Callable[[Tensor], Tensor], x_loss: Tensor) -> Tensor:
        score_fns.append(score_fn)
        return loss_fn(score_fn, x_loss)

    loss = split_batch_loss(model, x, keeping_score_fn)
    score = score_fns[0](x)
    grads = torch.autograd.grad(loss, params, allow_unused=True)
    flat = torch.cat([(g if g is not None else torch.zeros_like(p)).flatten() for g, p in zip(grads, params)])
    return score.detach(), flat.detach(), loss.item()


def cosine_distance(a: Tensor, b: Tensor) -> Tensor:
    """1 − cos(a_i, b_i) per row as ½‖a_i/‖a_i‖ − b_i/‖b_i‖‖², free of the cancellation in 1 − cos."""
    unit_a = a / a.norm(dim=-1, keepdim=True)
    unit_b = b / b.norm(dim=-1, keepdim=True)
    return 0.5 * (unit_a - unit_b).pow(2).sum(-1)


def relative_error(value: Tensor, reference: Tensor) -> Tensor:
    """‖value_i − reference_i‖ / ‖reference_i‖ per row."""
    return (value - reference).norm(dim=-1) / reference.norm(dim=-1)


@torch.no_grad()
def layer_contractions(model: DKEF, x: Tensor) -> tuple[list[float], list[int]]:
    """Each feature net's DEQ: the worst ‖∂f/∂z‖₂ at z* over the rows of x, and its solver iterations."""
    worst, iterations = [], []
    for net in model.features:
        inputs: dict[DEQ, Tensor] = {}
        hooks = [m.register_forward_pre_hook(lambda m, args: inputs.setdefault(m, args[0]))
                 for m in net.modules() if isinstance(m, DEQ)]
        try:
            net(x)
        finally:
            for hook in hooks:
                hook.remove()
        for deq, u in inputs.items():
            z = deq(u)
            iterations.append(deq.stats.n_iter)
            worst.append(contraction_factor(deq.cell, z, u).max().item())
    return worst, iterations


def _rounded(values: Tensor) -> list[float]:
    return [float(f"{v:.{SIGNIFICANT_DIGITS}g}") for v in values.tolist()]


def analyse(model: DKEF, x: Tensor, config: ConfigDict, step: int, settings: Settings) -> dict[str, Any]:
    """One analysis point: phantom vs exact scores and loss gradients on x, and the contractions."""
    seed = config.seed + step
    with torch.random.fork_rng(devices=[x.device] if x.device.type == "cuda" else []):
        score, grad, loss = score_and_gradient(model, x, analysis_loss(config, seed))
        exact = exact_copy(model, settings)
        score_ref, grad_ref, exact_loss = score_and_gradient(exact, x.double(), analysis_loss(config, seed))
        contractions, iterations = layer_contractions(model, x)
    score, grad = score.double(), grad.double()
    return {
        "step": step,
        "loss": loss,
        "exact_loss": exact_loss,
        "score_rel_error": _rounded(relative_error(score, score_ref)),
        "score_cosine_distance": _rounded(cosine_distance(score, score_ref)),
        "grad_rel_error": relative_error(grad[None], grad_ref[None]).item(),
        "grad_cosine_distance": cosine_distance(grad[None], grad_ref[None]).item(),
        "contraction_factor": contractions,
        "forward_iters": iterations,
    }


def train_and_analyse(loss: str, settings: Settings, device: torch.device, data_root: str = "") -> dict[str, Any]:
    """Trains DEQ-DKEF with `loss` for settings.steps steps, analysing every settings.every steps.

    data_root '' means $SCORE_MATCHING_DATA, else ./data (config.data.root); it is not recorded.
    """
    overrides = run_overrides(loss, settings, device.type)
    config, task = build_run(overrides, device, data_root)
    model = task.model
    optimizer = get_optimizer(config, model.parameters())
    step_fn = get_step_fn(config, task, optimizer, ExponentialMovingAverage(model, config.model.ema_rate), DistInfo(0, 1, 0))
    batch_size = config.training.batch_size
    points, analysis_seconds = [], 0.0
    start = time.perf_counter()
    for step in range(settings.steps + 1):
        # The last point analyses the final parameters on the batch the next step would take.
        x = task.get_batch(batch_indices(task.n_train, batch_size, step, config.seed), step)
        if step % settings.every == 0 or step == settings.steps:
            tic = time.perf_counter()
            points.append(analyse(model, x, config, step, settings))
            analysis_seconds += time.perf_counter() - tic
            print(_progress(loss, points[-1]), flush=True)
        if step < settings.steps:
            step_fn(step, x)
    return {
        "loss": loss,
        "config": CONFIG_FILE,
        "overrides": overrides,
        "batch_size": batch_size,
        "n_train": task.n_train,
        "deq": {key: config.deq[key] for key in ("layers", "solver", "tol", "grad", "phantom_steps", "phantom_tau", "norm", "norm_lambda")},
        "seconds": time.perf_counter() - start,
        "analysis_seconds": analysis_seconds,
        "points": points,
        "summary": summarise(points),
    }


def _progress(loss: str, point: dict[str, Any]) -> str:
    return (f"{loss} step {point['step']}: score rel. error median {statistics.median(point['score_rel_error']):.2e}, "
            f"gradient cosine distance {point['grad_cosine_distance']:.2e}, contraction {max(point['contraction_factor']):.3f}")


def _quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    position = q * (len(ordered) - 1)
    low, high = math.floor(position), math.ceil(position)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def _distribution(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "p90": _quantile(values, 0.9), "max": max(values)}


def summarise(points: list[dict[str, Any]]) -> dict[str, Any]:
    """Distribution summaries over all points (and rows): the numbers the tables quote."""
    contraction = [max(p["contraction_factor"]) for p in points]
    return {
        "points": len(points),
        "score_rows": sum(len(p["score_rel_error"]) for p in points),
        "score_rel_error": _distribution([e for p in points for e in p["score_rel_error"]]),
        "score_cosine_distance": _distribution([e for p in points for e in p["score_cosine_distance"]]),
        "grad_cosine_distance": _distribution([p["grad_cosine_distance"] for p in points]),
        "grad_rel_error": _distribution([p["grad_rel_error"] for p in points]),
        "contraction_factor": {"first": contraction[0], "last": contraction[-1], "max": max(contraction)},
        "loss": {"first": points[0]["loss"], "last": points[-1]["loss"]},
    }


SUMMARY_COLUMNS = (  # (header, summary key, statistic)
    ("score rel. error median", "score_rel_error", "median"), ("p90", "score_rel_error", "p90"),
    ("max", "score_rel_error", "max"),
    ("score 1 − cos median", "score_cosine_distance", "median"), ("max", "score_cosine_distance", "max"),
    ("gradient 1 − cos median", "grad_cosine_distance", "median"), ("max", "grad_cosine_distance", "max"),
    ("gradient rel. error median", "grad_rel_error", "median"), ("max", "grad_rel_error", "max"),
    ("contraction first", "contraction_factor", "first"), ("last", "contraction_factor", "last"),
    ("max", "contraction_factor", "max"),
    ("loss first", "loss", "first"), ("last", "loss", "last"),
)


def summary_table(result: dict[str, Any]) -> list[str]:
    """Markdown lines of a table with one row per loss: its distributions over the run."""
    header = ["loss", "points", "score rows", *(column[0] for column in SUMMARY_COLUMNS)]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for run in result["runs"]:
        m = run["summary"]
        row = [run["loss"], m["points"], m["score_rows"], *(m[key][stat] for _, key, stat in SUMMARY_COLUMNS)]
        lines.append("| " + " | ".join(format_value(v) for v in row) + " |")
    return lines


def budget_line(result: dict[str, Any]) -> str:
    """One sentence: the run's budget against the paper's, and the exact reference's settings."""
    s, paper = result["settings"], result["paper_budget"]
    return (f"Budget: {s['steps']} steps with {s['n_inducing']} inducing points, analysed every {s['every']} steps "
            f"(the paper: {paper['steps']} steps, {paper['n_inducing']} inducing points). Exact reference: "
            f"float64, {_reference_text(result)}.")


def _reference_text(result: dict[str, Any]) -> str:
    """How the exact reference differentiated (results written before "reference_grad" used implicit)."""
    if result.get("reference_grad", "implicit") == "implicit":
        return f"grad=implicit, forward and adjoint solves to tol {result['settings']['reference_tol']:g}"
    return f"grad=unrolled through a solve to tol {result['settings']['reference_tol']:g}"


def markdown(result: dict[str, Any]) -> str:
    """The run's facts and the summary table."""
    lines = [
        f"# Phantom gradient accuracy along DEQ-DKEF training on {result['device']}",
        "",
        f"torch {result['torch']}; threads: {result['threads']}. {result['description']}.",
        "",
        budget_line(result),
        "",
        *summary_table(result),
    ]
    return "\n".join(lines) + "\n"


def plot(result: dict[str, Any], path: Path) -> None:
    """Figures 5–7 as one grid, a column per loss: histograms of the score's relative error, the
    score's and the loss gradient's cosine distance, then the contraction factor along training."""
    runs = result["runs"]
    rows = [
        ("score_rel_error", "score relative error ‖s̃ − s‖/‖s‖ (fig. 5)"),
        ("score_cosine_distance", "score: 1 − cos(s, s̃) (fig. 6)"),
        ("grad_cosine_distance", "loss gradient: 1 − cos(g, g̃) (fig. 7)"),
    ]
    fig, axes = plt.subplots(len(rows) + 1, len(runs), figsize=(5.2 * len(runs), 3.0 * (len(rows) + 1)), squeeze=False)
    for col, run in enumerate(runs):
        for row, (field, label) in enumerate(rows):
            values = [v for p in run["points"] for v in (p[field] if isinstance(p[field], list) else [p[field]])]
            median = statistics.median(values)
            ax = axes[row][col]
            # log10 on a linear axis: the values span decades, and a log axis mislabels a narrow range
            ax.hist([math.log10(max(v, MIN_PLOTTED)) for v in values], bins=30, color="tab:blue")
            ax.axvline(math.log10(max(median, MIN_PLOTTED)), color="tab:red", linestyle="--", label=f"median {median:.2g}")
            ax.set_xlabel(f"log10 {label}")
            ax.set_ylabel("count" if field == "grad_cosine_distance" else "count (rows × steps)")
            ax.legend(fontsize=8)
            ax.set_title(f"{run['loss'].upper()} loss" if row == 0 else "")
        ax = axes[len(rows)][col]
        steps = [p["step"] for p in run["points"]]
        ax.plot(steps, [max(p["contraction_factor"]) for p in run["points"]], "o-", markersize=3, color="tab:blue")
        ax.set_xlabel("training step")
        ax.set_ylabel("contraction ‖∂f/∂z‖₂ at z*\n(worst layer and row)", color="tab:blue")
        ax.grid(alpha=0.3)
        right = ax.twinx()
        right.plot(steps, [statistics.median(p["score_rel_error"]) for p in run["points"]], "s-", markersize=3, color="tab:red")
        right.ticklabel_format(axis="y", style="sci", scilimits=(0, 0))
        right.set_ylabel("score relative error, median", color="tab:red")
    s = result["settings"]
    fig.suptitle(f"phantom K=2 vs exact implicit gradients, DEQ-DKEF on Parkinsons, {s['steps']} steps, "
                 f"{s['n_inducing']} inducing points; {result['device']}", fontsize=10)
    save(fig, path)


def run(losses: list[str], settings: Settings, device: torch.device, data_root: str = "") -> dict[str, Any]:
    """Every loss's run, with the device, torch version and settings."""
    return {
        "analysis": "phantom-accuracy",
        "device": device_name(device),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "description": "phantom (K=2) vs exact implicit-differentiation scores and loss gradients along "
                       f"DEQ-DKEF training on UCI Parkinsons ({CONFIG_FILE})",
        "settings": dataclasses.asdict(settings),
        "reference_grad": REFERENCE_GRAD,
        "paper_budget": {"steps": paper_config().training.n_iters, "n_inducing": paper_config().model.n_inducing},
        "runs": [train_and_analyse(loss, settings, device, data_root) for loss in losses],
    }


def write(result: dict[str, Any], stem: Path, with_json: bool = True) -> list[Path]:
    """Writes `stem`.md and .png, and `stem`.json unless with_json is False; returns the paths."""
    stem.parent.mkdir(parents=True, exist_ok=True)
    paths = [stem.with_suffix(".json")] if with_json else []
    if with_json:
        paths[0].write_text(json.dumps(result, indent=1) + "\n")
    md_path, png_path = stem.with_suffix(".md"), stem.with_suffix(".png")
    md_path.write_text(markdown(result))
    plot(result, png_path)
    return [*paths, md_path, png_path]


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    defaults = Settings()
    parser.add_argument("--losses", default="sm,ssm", help=f"comma-separated, from {list(LOSS_CHOICES)}")
    parser.add_argument("--steps", type=int, default=defaults.steps)
    parser.add_argument("--every", type=int, default=defaults.every)
    parser.add_argument("--n-inducing", type=int, default=defaults.n_inducing)
    parser.add_argument("--reference-tol", type=float, default=defaults.reference_tol)
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1: shared cores)")
    parser.add_argument("--data-root", default="", help="default: $SCORE_MATCHING_DATA, else ./data")
    parser.add_argument("--out-dir", type=Path, default=RESULTS)
    parser.add_argument("--redraw", action="store_true", help="only rewrite the .md and .png from the existing .json")
    args = parser.parse_args(argv)
    stem = args.out_dir / f"phantom-accuracy-{args.device}"
    if args.redraw:
        for path in write(json.loads(stem.with_suffix(".json").read_text()), stem, with_json=False):
            print(f"wrote {path}")
        return
    losses = [name.strip() for name in args.losses.split(",") if name.strip()]
    unknown = [name for name in losses if name not in LOSS_CHOICES]
    if unknown or not losses:
        raise ValueError(f"--losses names unknown losses {unknown}; valid: {list(LOSS_CHOICES)}")
    torch.set_num_threads(args.threads)
    settings = Settings(args.steps, args.every, args.n_inducing, args.reference_tol)
    device = resolve_device(args.device)
    result = run(losses, settings, device, args.data_root)
    for path in write(result, stem):
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
