"""Suite `losses`: exact score matching's Hessian trace, batched against the per-dimension loop.

The model is an explicit MLP energy log p(x) = MLP(x) − ½‖x‖² (`benchmarks.models.MLPEnergy`,
softplus, `depth` hidden layers of width `hidden`) trained with `exact_score_matching` on
standard-normal data of dimension d = 15, 100 and 200. Each d is a model family
"mlp-energy-d<d>" with the variants of `score_matching.losses.TRACE_METHODS`: "batched" (vmapped
backward passes over all d one-hot cotangents), "forward" (vmapped forward-mode products) and
"loop" (one backward pass per dimension), the reference. Its step is a whole training step; the
family "trace-d<d>" times the Hessian trace alone (`hessian_trace` on the same model and batch,
with the graph a training step keeps), which is what the 5× goal names.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import torch

from benchmarks.harness import Bench, count_params, training_bench
from benchmarks.models import MLPEnergy
from benchmarks.plots import MEMORY, TIME, families, save, title
from benchmarks.report import Target, ratio_of
from benchmarks.suites import Suite, Variant, register_suite
from score_matching.losses import TRACE_METHODS, exact_score_matching, hessian_trace, score_from_log_density

DIMENSIONS = (15, 100, 200)
STEP_FAMILY, TRACE_FAMILY = "mlp-energy-d", "trace-d"
GOAL_DIMENSION, GOAL_SPEEDUP = 100, 5.0
# The goal's dimension first: `benchmarks.run` runs families in this order, so a budget reaches it first.
VARIANTS = tuple(
    Variant(f"{family}{d}", trace)
    for d in sorted(DIMENSIONS, key=lambda d: d != GOAL_DIMENSION)
    for family in (STEP_FAMILY, TRACE_FAMILY)
    for trace in TRACE_METHODS
)


def sizes(quick: bool) -> dict[str, Any]:
    """Sizes of the high-dimensional DKEF experiments (batch 128), or shrunk ones with `quick`."""
    return {
        "seed": 0,
        "warmup": 2 if quick else 3,
        "steps": 5 if quick else 20,
        "batch": 32 if quick else 128,
        "hidden": 64 if quick else 256,
        "depth": 3,
        "lr": 1e-3,
    }


def _family_and_dimension(model: str) -> tuple[str, int]:
    family = STEP_FAMILY if model.startswith(STEP_FAMILY) else TRACE_FAMILY
    return family, int(model.removeprefix(family))


def build(variant: Variant, s: dict[str, Any], device: torch.device) -> Bench:
    """The MLP energy for `variant`'s dimension: trained with its trace method, or its trace alone."""
    family, d = _family_and_dimension(variant.model)
    torch.manual_seed(s["seed"])
    model = MLPEnergy(d, s["hidden"], s["depth"]).to(device)
    generator = torch.Generator(device=device).manual_seed(s["seed"])
    x = torch.randn(s["batch"], d, generator=generator, device=device)
    # "forward" differentiates the score with torch.func, which needs a torch.func-built score.
    score_fn = score_from_log_density(model, functional=variant.name == "forward")
    if family == TRACE_FAMILY:

        def trace_step() -> None:
            hessian_trace(score_fn, x, method=variant.name)

        return Bench(step=trace_step, params=count_params(model))
    return training_bench(model, lambda: exact_score_matching(score_fn, x, trace=variant.name), s["lr"])


def targets(result: dict[str, Any]) -> list[Target]:
    """The goal: the batched trace at least 5× faster than the loop at d = 100; also shown for the
    whole training step."""
    return [
        Target(f"{family}{GOAL_DIMENSION}: loop time / batched time",
               ratio_of(result, f"{family}{GOAL_DIMENSION}", "loop", "batched", "step_ms"), GOAL_SPEEDUP, at_most=False)
        for family in (TRACE_FAMILY, STEP_FAMILY)
    ]


def plot(result: dict[str, Any], path: Path) -> None:
    """Step time and memory against d, one line per trace method."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    groups = families(result)
    for ax, (field, label, _) in zip(axes, (TIME, MEMORY)):
        for family, style in ((STEP_FAMILY, "o-"), (TRACE_FAMILY, "s--")):
            for colour, method in enumerate(TRACE_METHODS):
                points = [(_family_and_dimension(m)[1], v[field]) for m, vs in groups.items() for v in vs
                          if m.startswith(family) and v["name"] == method and v[field] is not None]
                if points:
                    what = "training step" if family == STEP_FAMILY else "trace"
                    ax.plot(*zip(*points), style, color=f"C{colour}", label=f"{method} ({what})")
        ax.set_xlabel("data dimension d")
        ax.set_ylabel(label)
        ax.set_yscale("log")
        ax.set_xticks(list(DIMENSIONS))
        ax.grid(alpha=0.3)
        ax.legend(title="Hessian trace", fontsize="small")
    fig.suptitle(title(result))
    save(fig, path)


SUITE = register_suite(Suite(
    name="losses",
    description="exact-SM Hessian trace: batched vs forward-mode vs per-dimension loop, d = 15, 100, 200",
    step="mlp-energy-d*: one training step (forward, exact-SM loss, backward, Adam step); trace-d*: the "
         "per-sample Hessian trace alone, with its graph kept",
    reference="loop",
    variants=VARIANTS,
    sizes=sizes,
    build=build,
    plot=plot,
    targets=targets,
))
