"""Annealed losses of noise-conditional score networks (NCSN; Song & Ermon, 2019).

The score network is called as score_fn(x_noisy, labels), with labels the LongTensor (B,) of
noise-level indices into sigmas. Each sample's loss is weighted by σ_label^anneal_power (2 makes
every noise level contribute on the same scale, as in NCSN).
"""
from __future__ import annotations


import torch
from torch import Tensor

from score_matching.losses.common import (
    ConditionalScoreFn,
    check_batch,
    check_positive_int,
    per_sample_sum,
    replicate,
    requires_grad_input,
    standard_noise,
)
from score_matching.losses.projections import sample_projections
from score_matching.losses.sliced import projected_hessian_terms


def annealed_dsm(
    score_fn: ConditionalScoreFn,
    x: Tensor,
    sigmas: Tensor,
    labels: Tensor | None = None,
    anneal_power: float = 2.0,
    generator: torch.Generator | None = None,
    noise: Tensor | None = None,
) -> Tensor:
    """mean_b σ_b^p · ½‖s(x̃_b, l_b) + (x̃_b − x_b)/σ_b²‖², x̃ = x + σ_b ε, a scalar.

    σ_b = sigmas[l_b]; labels l are drawn uniformly from range(len(sigmas)) when None; noise,
    if given, is the standard-normal draw ε itself (otherwise sampled with generator).
    """
    _check_anneal_power(anneal_power)
    used, labels = _noise_levels(x, sigmas, labels, generator)
    noise = standard_noise(x, noise, generator)
    residual = score_fn(x + used * noise, labels) + noise / used
    return (0.5 * per_sample_sum(residual**2) * used.reshape(-1) ** anneal_power).mean()


def annealed_ssm_vr(
    score_fn: ConditionalScoreFn,
    x: Tensor,
    sigmas: Tensor,
    labels: Tensor | None = None,
    n_particles: int = 1,
    projection: str = "rademacher",
    anneal_power: float = 2.0,
    generator: torch.Generator | None = None,
    noise: Tensor | None = None,
) -> Tensor:
    """mean σ_b^p · [½‖s(x̃_b, l_b)‖² + vᵀ(∂s/∂x̃)v] over samples and projections, a scalar.

    x̃ = x + σ_b ε as in `annealed_dsm` (labels and noise as there); the SSM-VR term
    (equation 4) is taken at x̃, with n_particles projections v per sample (see
    `sample_projections`; E[v vᵀ] = I).
    """
    check_positive_int("n_particles", n_particles)
    _check_anneal_power(anneal_power)
    used, labels = _noise_levels(x, sigmas, labels, generator)
    noisy = x + used * standard_noise(x, noise, generator)
    copies = requires_grad_input(replicate(noisy, n_particles))
    v = sample_projections(copies, projection, generator)
    with torch.enable_grad():
        s = score_fn(copies, labels.repeat(n_particles))
        _, vhv = projected_hessian_terms(s, copies, v)
    per_copy = 0.5 * per_sample_sum(s**2) + vhv
    weights = used.reshape(-1).repeat(n_particles) ** anneal_power
    return (per_copy * weights).mean()


def _check_anneal_power(anneal_power: float) -> None:
    if isinstance(anneal_power, bool) or not isinstance(anneal_power, (int, float)):
        raise ValueError(f"anneal_power must be a number, got {anneal_power!r}")


def _noise_levels(
    x: Tensor, sigmas: Tensor, labels: Tensor | None, generator: torch.Generator | None
) -> tuple[Tensor, Tensor]:
    """Per-sample σ shaped (B, 1, ..., 1) for broadcasting against x, and the labels used."""
    check_batch(x)
    if not isinstance(sigmas, Tensor) or sigmas.dim() != 1 or sigmas.numel() == 0:
        raise ValueError(f"sigmas must be a non-empty 1-D tensor of noise levels, got {sigmas!r}")
    if not bool((sigmas > 0).all()) or not bool(torch.isfinite(sigmas).all()):
        raise ValueError(f"sigmas must all be finite and > 0, got {sigmas.tolist()}")
    n_levels = sigmas.numel()
    if labels is None:
        labels = torch.randint(0, n_levels, (x.shape[0],), device=x.device, generator=generator)
    elif not isinstance(labels, Tensor) or labels.shape != (x.shape[0],) or labels.dtype != torch.long:
        got = f"{labels.dtype} {tuple(labels.shape)}" if isinstance(labels, Tensor) else type(labels).__name__
        raise ValueError(f"labels must be a LongTensor of shape ({x.shape[0]},), got {got}")
    elif not (0 <= int(labels.min()) and int(labels.max()) < n_levels):
        raise ValueError(f"labels must index sigmas, i.e. lie in [0, {n_levels}), got {labels.tolist()}")
    used = sigmas.to(device=x.device, dtype=x.dtype)[labels]
    return used.reshape(-1, *([1] * (x.dim() - 1))), labels
