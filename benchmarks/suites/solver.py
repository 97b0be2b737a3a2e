"""Suite `solver`: forward-solve cost of Picard vs Anderson, warm starts, and the paper's stopping rule.

One step is one no-grad forward of the model at x_t (the solve a sampler runs), after which the
input drifts, x_{t+1} = x_t + drift·ξ with ξ ~ N(0, I) drawn from a seeded generator, as in
Langevin sampling; every variant of a family sees the same sequence. Families:
- "dense-slow": the DEQ energy with a slowly contracting cell, z = tanh(W z + g(x)), W symmetric
  and spectrally normalised to 1/λ, g a Linear scaled by `dense_injection_gain` so that z* stays
  near 0 where tanh' ≈ 1: ||∂f/∂z|| ≈ 1/λ (reported as `contraction_factor`). Variants:
  picard and anderson (cold), picard-warm and anderson-warm (warm start from the previous z*),
  paper (Picard until the whole-batch ||z_{k+1} − z_k|| < paper_tol, see `benchmarks.paper_solver`).
- "conv-score": the `depth` suite's conv DEQ (B, C, 32, 32 state): picard, anderson, paper.
"picard" (relative residual `tol`, cold start) is the reference. `cell_evals` is the mean number
of cell evaluations per forward; `converged` the fraction of forwards that met their tolerance.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from benchmarks.harness import Bench, count_params, deq_contraction
from benchmarks.models import ConvScoreNet, DenseDEQEnergy, deq_conv_core
from benchmarks.paper_solver import PAPER_SOLVER
from benchmarks.plots import MEMORY, TIME, bar_grid
from benchmarks.report import Target, ratio_of
from benchmarks.suites import Suite, Variant
from deq_plugin import DEQ, DenseCell

SLOW, CONV = "dense-slow", "conv-score"
SOLVER_OPTIONS = {
    "picard": {"solver": "picard"},
    "anderson": {"solver": "anderson"},
    "picard-warm": {"solver": "picard", "warm_start": True},
    "anderson-warm": {"solver": "anderson", "warm_start": True},
    "paper": {"solver": PAPER_SOLVER},
}
VARIANTS = tuple(Variant(SLOW, name) for name in SOLVER_OPTIONS) + tuple(
    Variant(CONV, name) for name in ("picard", "anderson", "paper")
)


def sizes(quick: bool) -> dict[str, Any]:
    """Paper-scale sizes, or shrunk ones for a CPU run with `quick`."""
    return {
        "seed": 0,
        "warmup": 2 if quick else 3,
        "steps": 10 if quick else 20,
        "drift": 1e-3,
        "tol": 1e-4,
        "paper_tol": 1e-5,
        "max_iter": 128,
        "contraction_samples": 8,
        "dense_batch": 128,
        "dense_in_features": 15,
        "dense_hidden": 64 if quick else 256,
        "dense_latent": 64,
        "dense_norm_lambda": 1.1,
        "dense_injection_gain": 0.1,
        "conv_batch": 8 if quick else 128,
        "conv_channels": 16 if quick else 128,
        "conv_image_size": 32,
        "conv_norm": "spectral",
        "conv_norm_lambda": 1.1,
    }


def _slow_energy(s: dict[str, Any], deq_options: dict[str, Any]) -> DenseDEQEnergy:
    hidden = s["dense_hidden"]
    cell = DenseCell(hidden, activation="tanh", norm="spectral", norm_lambda=s["dense_norm_lambda"])
    injection = nn.Linear(s["dense_in_features"], hidden)
    with torch.no_grad():
        raw = torch.randn(hidden, hidden)
        # symmetric: the spectral radius equals the norm, so Picard really contracts at rate ≈ 1/λ
        cell.linear.parametrizations.weight.original.copy_((raw + raw.T) / 2)
        injection.weight.mul_(s["dense_injection_gain"])
        injection.bias.mul_(s["dense_injection_gain"])
    return DenseDEQEnergy(s["dense_in_features"], hidden, s["dense_latent"], cell=cell, injection=injection, **deq_options)


def build(variant: Variant, s: dict[str, Any], device: torch.device) -> Bench:
    """The model of `variant`'s family with its solver settings, and its drifting-input step."""
    options = dict(SOLVER_OPTIONS[variant.name])
    options.update(tol=s["paper_tol"] if variant.name == "paper" else s["tol"], max_iter=s["max_iter"])
    generator = torch.Generator(device=device).manual_seed(s["seed"])
    torch.manual_seed(s["seed"])
    if variant.model == SLOW:
        model: nn.Module = _slow_energy(s, options)
        deq = model.deq
        x = torch.randn(s["dense_batch"], s["dense_in_features"], generator=generator, device=device)
        injection = model.injection
    else:
        deq = deq_conv_core(s["conv_channels"], s["conv_norm"], s["conv_norm_lambda"], **options)
        model = ConvScoreNet(s["conv_channels"], deq)
        size = s["conv_image_size"]
        x = torch.rand(s["conv_batch"], 3, size, size, generator=generator, device=device)
        injection = model.begin
    model.to(device).eval()
    with torch.no_grad():
        contraction = deq_contraction(deq, injection(x), s["contraction_samples"])

    def step() -> dict[str, float]:
        nonlocal x
        with torch.no_grad():
            model(x)
        x = x + s["drift"] * torch.randn(x.shape, generator=generator, device=device)
        return {"cell_evals": deq.stats.n_iter, "converged": float(deq.stats.converged), "rel_residual": deq.stats.rel_residual}

    return Bench(step, count_params(model), {"contraction_factor": contraction, **_settings(deq)})


def _settings(deq: DEQ) -> dict[str, Any]:
    return {"solver": deq.solver, "tol": deq.tol, "warm_start": deq.warm_start}


def targets(result: dict[str, Any]) -> list[Target]:
    """The goal on the slowly contracting cell: Anderson needs ≥ 30 % fewer cell evaluations."""
    ratio = ratio_of(result, SLOW, "anderson", "picard", "cell_evals")
    return [Target(f"{SLOW}: anderson / picard cell evaluations", ratio, 0.7)]


def plot(result: dict[str, Any], path: Path) -> None:
    """Cell evaluations, time and memory per forward, one column per family."""
    bar_grid(result, [("cell_evals", "cell evaluations per forward", False), TIME, MEMORY], path)


SUITE = Suite(
    name="solver",
    description="Picard vs Anderson, warm start, and the paper's absolute whole-batch stopping rule",
    step="one no-grad forward at x_t, then x_{t+1} = x_t + drift·N(0, I) (a sampler's solve)",
    reference="picard",
    variants=VARIANTS,
    sizes=sizes,
    build=build,
    plot=plot,
    targets=targets,
)
