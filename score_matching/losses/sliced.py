"""Sliced score matching (Song et al., 2019; the paper's equations 3 and 4)."""
from __future__ import annotations

import torch
from torch import Tensor

from score_matching.losses.common import (
    ScoreFn,
    check_batch,
    check_positive_int,
    per_sample_sum,
    replicate,
    requires_grad_input,
)
from score_matching.losses.projections import sample_projections


def sliced_score_matching(
    score_fn: ScoreFn,
    x: Tensor,
    n_particles: int = 1,
    projection: str = "rademacher",
    generator: torch.Generator | None = None,
) -> Tensor:
    """SSM: mean over samples and projections of ½ (vᵀs)² + vᵀ(∂s/∂x)v, a scalar (equation 3).

    x is replicated n_particles times, each copy with its own random v (see `sample_projections`:
    "rademacher", "gaussian", or "sphere" — uniform on the sphere of radius √D, so that
    E[v vᵀ] = I for every choice and the loss is an unbiased estimate of exact score matching).
    """
    first, hvp_term = _projected_terms(score_fn, x, n_particles, projection, generator, variance_reduced=False)
    return (first + hvp_term).mean()


def sliced_score_matching_vr(
    score_fn: ScoreFn,
    x: Tensor,
    n_particles: int = 1,
    projection: str = "rademacher",
    generator: torch.Generator | None = None,
) -> Tensor:
    """SSM-VR: mean of ½‖s‖² + vᵀ(∂s/∂x)v, a scalar (equation 4).

    The (vᵀs)² term of SSM is replaced by its expectation ½‖s‖², valid since E[v vᵀ] = I for
    every projection ("rademacher", "gaussian", "sphere" of radius √D); x is replicated
    n_particles times, each copy with its own v.
    """
    first, hvp_term = _projected_terms(score_fn, x, n_particles, projection, generator, variance_reduced=True)
    return (first + hvp_term).mean()


def projected_hessian_terms(score: Tensor, x: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
    """Per-row (vᵀs, vᵀ(∂s/∂x)v), each of shape (N,), for a score s computed from x with a graph."""
    sv = per_sample_sum(score * v)
    (hvp,) = torch.autograd.grad(sv.sum(), x, create_graph=True, materialize_grads=True)
    return sv, per_sample_sum(hvp * v)


def _projected_terms(
    score_fn: ScoreFn,
    x: Tensor,
    n_particles: int,
    projection: str,
    generator: torch.Generator | None,
    variance_reduced: bool,
) -> tuple[Tensor, Tensor]:
    check_batch(x)
    check_positive_int("n_particles", n_particles)
    copies = requires_grad_input(replicate(x, n_particles))
    v = sample_projections(copies, projection, generator)
    with torch.enable_grad():
        s = score_fn(copies)
        sv, vhv = projected_hessian_terms(s, copies, v)
    first = 0.5 * per_sample_sum(s**2) if variance_reduced else 0.5 * sv**2
    return first, vhv
