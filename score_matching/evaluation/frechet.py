"""The Fréchet distance between Gaussians fitted to two sets of features (the distance behind FID)."""
from __future__ import annotations

import numpy as np
import scipy.linalg

# The largest imaginary part tolerated on the diagonal of sqrtm(Σ1 Σ2): numerical noise of the
# Schur-based square root of a product of PSD matrices, as pytorch-fid tolerates.
MAX_IMAGINARY = 1e-3


def gaussian_statistics(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean (D,) and unbiased covariance (D, D), in float64, of features (N, D) with N >= 2."""
    features = np.asarray(features, dtype=np.float64)
    if features.ndim != 2 or features.shape[0] < 2:
        raise ValueError(f"features must have shape (N, D) with N >= 2, got {features.shape}")
    if not np.isfinite(features).all():
        raise ValueError("features contain NaN or infinite values")
    return features.mean(axis=0), np.cov(features, rowvar=False)


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """||μ1 − μ2||² + tr(Σ1 + Σ2 − 2 (Σ1 Σ2)^½): the squared 2-Wasserstein distance of two Gaussians.

    The matrix square root is scipy.linalg.sqrtm of Σ1 Σ2, taken as is: no term is rescaled and
    no ε is added to the covariances. A square root with a non-negligible imaginary part (or a
    non-finite one) means the statistics are degenerate, e.g. fewer samples than dimensions, and
    is an error.
    """
    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    sigma1, sigma2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(np.asarray(sigma2, np.float64))
    d = mu1.shape[0]
    if mu1.shape != (d,) or mu2.shape != (d,) or sigma1.shape != (d, d) or sigma2.shape != (d, d):
        raise ValueError(
            f"need means of shape (D,) and covariances (D, D) of one D; got {mu1.shape}, {sigma1.shape}, "
            f"{mu2.shape}, {sigma2.shape}"
        )
    covmean = scipy.linalg.sqrtm(sigma1 @ sigma2)
    if not np.isfinite(covmean).all():
        raise ValueError("sqrtm(Σ1 Σ2) is not finite: the covariances are degenerate (too few samples?)")
    if np.iscomplexobj(covmean):
        worst = np.abs(np.diagonal(covmean).imag).max()
        if worst > MAX_IMAGINARY:
            raise ValueError(
                f"sqrtm(Σ1 Σ2) has an imaginary part of {worst:.3g} on its diagonal: degenerate covariances"
            )
        covmean = covmean.real
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * np.trace(covmean))
