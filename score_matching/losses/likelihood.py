"""Maximum likelihood, for models with a normalised log-density (NICE)."""
from __future__ import annotations

from torch import Tensor

from score_matching.losses.common import LogDensityFn, check_batch


def maximum_likelihood(log_density_fn: LogDensityFn, x: Tensor) -> Tensor:
    """−mean_b log p(x_b), a scalar: the negative log-likelihood of a normalised model."""
    check_batch(x)
    return -log_density_fn(x).mean()
