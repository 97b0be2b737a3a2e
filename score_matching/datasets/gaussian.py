"""High-dimensional Gaussian data (paper section 4.2.2) with its exact log-density and score.

Split sizes are 4860/540/600 (train/val/test), as the sliced-score-matching code uses;
the paper's text says 4860/600/540. The reference code drew N(0, I); here the covariance is a random,
fixed-seed, well-conditioned matrix. `GAUSSIAN_DISTRIBUTIONS` names both: "random" (the default) and
"standard", N(0, I), whose expected log-likelihood, -dim/2 (log 2 pi + 1), is the paper's
200-dimensional ground truth -283.79.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class GaussianData:
    """Samples of N(mean, covariance) (float32, shape (rows, dim)) and the true density's closed forms.

    `mean`, `covariance` and `precision` are float64; the closed forms compute in float64 and return
    the input's dtype.
    """

    name: str
    train: torch.Tensor
    val: torch.Tensor
    test: torch.Tensor
    mean: torch.Tensor
    covariance: torch.Tensor
    precision: torch.Tensor
    log_det_covariance: float

    @property
    def dim(self) -> int:
        """Dimension of the Gaussian."""
        return self.mean.shape[0]

    def true_log_density(self, x: torch.Tensor) -> torch.Tensor:
        """log N(x; mean, covariance) per row of x (shape (..., dim) -> (...))."""
        centred = x.to(torch.float64) - self.mean
        mahalanobis = torch.einsum("...i,ij,...j->...", centred, self.precision, centred)
        log_density = -0.5 * (mahalanobis + self.log_det_covariance + self.dim * math.log(2 * math.pi))
        return log_density.to(x.dtype)

    def true_score(self, x: torch.Tensor) -> torch.Tensor:
        """grad_x log N(x; mean, covariance) = -precision (x - mean), same shape as x."""
        centred = x.to(torch.float64) - self.mean
        return (-centred @ self.precision).to(x.dtype)


# The keyword arguments of `gaussian_dataset` that each named distribution (config.data.gaussian) sets.
GAUSSIAN_DISTRIBUTIONS: dict[str, dict[str, object]] = {
    "random": {"eigenvalue_range": (0.5, 2.0), "mean_std": 1.0},
    "standard": {"eigenvalue_range": (1.0, 1.0), "mean_std": 0.0},
}


def random_covariance(dim: int, generator: torch.Generator, eigenvalue_range: tuple[float, float]) -> torch.Tensor:
    """Q diag(lambda) Q^T with Q Haar-random orthogonal and lambda log-uniform in `eigenvalue_range` (float64)."""
    low, high = eigenvalue_range
    if not 0 < low <= high:
        raise ValueError(f"eigenvalue_range must satisfy 0 < low <= high, got {eigenvalue_range}")
    gaussian = torch.randn(dim, dim, generator=generator, dtype=torch.float64)
    q, r = torch.linalg.qr(gaussian)
    q = q * torch.sign(torch.diagonal(r))  # sign fix makes Q Haar-distributed
    u = torch.rand(dim, generator=generator, dtype=torch.float64)
    eigenvalues = torch.exp(math.log(low) + u * (math.log(high) - math.log(low)))
    covariance = (q * eigenvalues) @ q.T
    return 0.5 * (covariance + covariance.T)


def gaussian_dataset(
    dim: int,
    seed: int = 0,
    *,
    sizes: tuple[int, int, int] = (4860, 540, 600),
    eigenvalue_range: tuple[float, float] = GAUSSIAN_DISTRIBUTIONS["random"]["eigenvalue_range"],
    mean_std: float = GAUSSIAN_DISTRIBUTIONS["random"]["mean_std"],
) -> GaussianData:
    """Train/val/test samples of N(mu, Sigma) in `dim` dimensions; everything is fixed by `seed`.

    mu ~ N(0, mean_std^2 I); Sigma = `random_covariance(dim, ..., eigenvalue_range)`, so its condition
    number is at most high / low (4 by default). `sizes` is (train, val, test).
    """
    if dim < 1:
        raise ValueError(f"dim must be a positive integer, got {dim}")
    if len(sizes) != 3 or min(sizes) < 1:
        raise ValueError(f"sizes must be three positive (train, val, test) counts, got {sizes}")
    if mean_std < 0:
        raise ValueError(f"mean_std must be >= 0, got {mean_std}")
    generator = torch.Generator().manual_seed(seed)
    mean = mean_std * torch.randn(dim, generator=generator, dtype=torch.float64)
    covariance = random_covariance(dim, generator, eigenvalue_range)
    cholesky = torch.linalg.cholesky(covariance)
    samples = mean + torch.randn(sum(sizes), dim, generator=generator, dtype=torch.float64) @ cholesky.T
    train, val, test = torch.split(samples.to(torch.float32), list(sizes))
    return GaussianData(
        name=f"gaussian{dim}",
        train=train,
        val=val,
        test=test,
        mean=mean,
        covariance=covariance,
        precision=torch.cholesky_inverse(cholesky),
        log_det_covariance=float(2 * torch.log(torch.diagonal(cholesky)).sum()),
    )


def named_gaussian_dataset(dim: int, distribution: str = "random", **kwargs) -> GaussianData:
    """`gaussian_dataset(dim, **kwargs)` with the covariance and mean of `GAUSSIAN_DISTRIBUTIONS[distribution]`."""
    if distribution not in GAUSSIAN_DISTRIBUTIONS:
        raise ValueError(f"unknown Gaussian distribution {distribution!r}; valid: {list(GAUSSIAN_DISTRIBUTIONS)}")
    return gaussian_dataset(dim, **GAUSSIAN_DISTRIBUTIONS[distribution], **kwargs)
