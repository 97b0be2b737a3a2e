"""Denoising score matching (Vincent, 2011; the paper's equation 2)."""
from __future__ import annotations

import torch
from torch import Tensor

from score_matching.losses.common import ScoreFn, check_batch, check_positive, per_sample_sum, standard_noise


def denoising_score_matching(
    score_fn: ScoreFn,
    x: Tensor,
    sigma: float,
    generator: torch.Generator | None = None,
    noise: Tensor | None = None,
) -> Tensor:
    """DSM: mean_b ½‖s(x̃_b) + (x̃_b − x_b)/σ²‖², x̃ = x + σε with ε ~ N(0, I), a scalar (equation 2).

    noise, if given, is the standard-normal draw ε itself (shape of x); otherwise it is sampled
    with generator. Unlike the sliced-score-matching code (which scales the residual by σ²), this
    is equation 2 as written.
    """
    check_batch(x)
    check_positive("sigma", sigma)
    noise = standard_noise(x, noise, generator)
    residual = score_fn(x + sigma * noise) + noise / sigma
    return 0.5 * per_sample_sum(residual**2).mean()
