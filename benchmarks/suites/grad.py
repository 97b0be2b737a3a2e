"""Suite `grad`: the DEQ gradient modes on one model — cost, and error against exact differentiation.

The model is the DKEF-like DEQ energy `benchmarks.models.DenseDEQEnergy`: log p(x) = a·tanh(φ(x))
− ½‖x‖², φ = Linear(z*), z* = softplus(W z* + softplus(Linear(x))), W (30×30) Frobenius-normalised,
picard with relative tol 1e-4. It is trained with exact score matching and the vmapped
"batched" Hessian trace (the implicit mode's adjoint solves run under vmap through the
Function's vmap rule).
Variants: phantom-1, phantom-2, phantom-5 (K phantom steps), implicit and unrolled; reference
implicit. Each variant also reports, at its initial parameters and the benchmark batch,
`score_rel_error` = ‖s − s*‖/‖s*‖ and `grad_rel_error` = ‖g − g*‖/‖g*‖, g the gradient of the
loss with respect to all parameters, against s*, g* from the same model in float64 with the
implicit mode solved to `reference_tol` (forward and adjoint), i.e. exact implicit
differentiation. `contraction_factor` is the worst ||∂f/∂z|| at z* over a few samples.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from benchmarks.harness import Bench, deq_contraction, training_bench
from benchmarks.models import DenseDEQEnergy
from benchmarks.plots import MEMORY, TIME, bar_grid
from benchmarks.suites import Suite, Variant, register_suite
from deq_plugin import DenseCell
from score_matching.losses import exact_score_matching, score_from_log_density

MODEL = "dense-deq-energy"
MODES = {
    "phantom-1": {"grad": "phantom", "phantom_steps": 1},
    "phantom-2": {"grad": "phantom", "phantom_steps": 2},
    "phantom-5": {"grad": "phantom", "phantom_steps": 5},
    "implicit": {"grad": "implicit"},
    "unrolled": {"grad": "unrolled"},
}
VARIANTS = tuple(Variant(MODEL, name) for name in MODES)
TRACE = "batched"


def sizes(quick: bool) -> dict[str, Any]:
    """Paper-scale DKEF sizes (batch 128, d 15, width 30, latent 64); `quick` only cuts steps."""
    return {
        "seed": 0,
        "warmup": 2 if quick else 3,
        "steps": 5 if quick else 20,
        "batch": 64 if quick else 128,
        "in_features": 15,
        "hidden": 30,
        "latent": 64,
        "norm_lambda": 1.2,
        "tol": 1e-4,
        "max_iter": 128,
        "reference_tol": 1e-10,
        "reference_max_iter": 1000,
        "contraction_samples": 8,
        "lr": 1e-3,
    }


def _energy(s: dict[str, Any], **deq_options: Any) -> DenseDEQEnergy:
    torch.manual_seed(s["seed"])
    cell = DenseCell(s["hidden"], norm="frobenius", norm_lambda=s["norm_lambda"])
    return DenseDEQEnergy(s["in_features"], s["hidden"], s["latent"], cell=cell, **deq_options)


def _loss(model: DenseDEQEnergy, x: Tensor) -> Tensor:
    return exact_score_matching(score_from_log_density(model), x, trace=TRACE)


def _score_and_grad(model: DenseDEQEnergy, x: Tensor) -> tuple[Tensor, Tensor]:
    """The score at x and the loss's gradient over all parameters (flattened), detached."""
    score = score_from_log_density(model)(x).detach()
    grads = torch.autograd.grad(_loss(model, x), list(model.parameters()))
    return score, torch.cat([g.flatten() for g in grads])


def _relative_error(value: Tensor, reference: Tensor) -> float:
    return ((value.double() - reference).norm() / reference.norm()).item()


def build(variant: Variant, s: dict[str, Any], device: torch.device) -> Bench:
    """The energy with `variant`'s gradient mode, its errors against the exact reference, and its step."""
    options = {"solver": "picard", "tol": s["tol"], "max_iter": s["max_iter"], **MODES[variant.name]}
    model = _energy(s, **options).to(device)
    reference = _energy(
        s, solver="picard", grad="implicit", tol=s["reference_tol"], max_iter=s["reference_max_iter"],
    ).to(device=device, dtype=torch.float64)
    generator = torch.Generator(device=device).manual_seed(s["seed"])
    x = torch.randn(s["batch"], s["in_features"], generator=generator, device=device)
    score, grad = _score_and_grad(model, x)
    score_ref, grad_ref = _score_and_grad(reference, x.double())
    with torch.no_grad():
        contraction = deq_contraction(model.deq, model.injection(x), s["contraction_samples"])
    fields = {
        "score_rel_error": _relative_error(score, score_ref),
        "grad_rel_error": _relative_error(grad, grad_ref),
        "contraction_factor": contraction,
    }
    return training_bench(model, lambda: _loss(model, x), s["lr"], fields)


def plot(result: dict[str, Any], path: Path) -> None:
    """Memory, time and both errors per gradient mode."""
    errors = [("score_rel_error", "score: relative error vs exact", True),
              ("grad_rel_error", "loss gradient: relative error vs exact", True)]
    bar_grid(result, [MEMORY, TIME, *errors], path)


SUITE = register_suite(Suite(
    name="grad",
    description="phantom (K=1, 2, 5), implicit and unrolled gradients of one DEQ energy under exact SM",
    step=f"one training step: forward, exact-SM loss ({TRACE} Hessian trace), backward, Adam step",
    reference="implicit",
    variants=VARIANTS,
    sizes=sizes,
    build=build,
    plot=plot,
))
