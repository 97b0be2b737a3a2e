"""Array-level steps of the DKEF/sliced-score-matching UCI protocol: decorrelation, dequantisation,
PCA whitening and the hold-out split sizes. See `uci.py` for how they are chained."""
from __future__ import annotations

from typing import Sequence

import numpy as np


def drop_correlated_columns(
    values: np.ndarray, names: Sequence[str], max_abs_correlation: float = 0.98
) -> tuple[np.ndarray, list[str], list[str]]:
    """Drop one column of every pair whose |Pearson correlation| exceeds `max_abs_correlation`.

    Greedy, as in the reference code: while some column is too correlated with another, drop the
    lowest-index such column and recompute. Returns (kept values, kept names, dropped names).
    """
    if values.shape[1] != len(names):
        raise ValueError(f"{values.shape[1]} columns but {len(names)} names")
    kept = list(names)
    while True:
        too_high = np.abs(np.corrcoef(values, rowvar=False)) > max_abs_correlation
        np.fill_diagonal(too_high, False)
        offenders = np.flatnonzero(too_high.any(axis=1))
        if offenders.size == 0:
            break
        values = np.delete(values, offenders[0], axis=1)
        kept.pop(offenders[0])
    dropped = [name for name in names if name not in kept]
    return values, kept, dropped


def dequantize_by_median_gap(values: np.ndarray, names: Sequence[str], rng: np.random.Generator) -> np.ndarray:
    """Add U(-g, g) noise to each column, g being the median gap between its sorted distinct values.

    The width 2g follows the reference code, `(rand * 2 - 1) * gap`. A constant column has no gap
    and is rejected.
    """
    noisy = values.copy()
    for column, name in enumerate(names):
        distinct = np.unique(values[:, column])
        if distinct.size < 2:
            raise ValueError(f"column {name!r} is constant ({distinct}); it cannot be dequantised")
        gap = np.median(np.diff(distinct))
        noisy[:, column] += rng.uniform(-gap, gap, size=values.shape[0])
    return noisy


def fit_pca_whitening(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(mean, W) such that `(values - mean) @ W` has identity covariance (1/n normalisation), by PCA.

    W = V diag(sqrt(n) / s) from the SVD of the centred rows, as in the reference code (no epsilon).
    """
    mean = values.mean(axis=0)
    centred = values - mean
    rank = np.linalg.matrix_rank(centred)
    if rank < values.shape[1]:
        raise ValueError(
            f"cannot whiten: the {values.shape[0]} rows span only {rank} of {values.shape[1]} dimensions"
        )
    _, singular, vt = np.linalg.svd(centred, full_matrices=False)
    return mean, vt.T * (np.sqrt(values.shape[0]) / singular)


def holdout_sizes(n_rows: int, cap: int = 1000, divisor: int = 10) -> tuple[int, int, int]:
    """(train, val, test) sizes: test = min(cap, n // divisor), val = min(cap, (n - test) // divisor)."""
    if n_rows < 1 or cap < 1 or divisor < 1:
        raise ValueError(f"need positive n_rows, cap and divisor; got {n_rows}, {cap}, {divisor}")
    n_test = min(cap, n_rows // divisor)
    n_val = min(cap, (n_rows - n_test) // divisor)
    n_train = n_rows - n_test - n_val
    if min(n_train, n_val, n_test) < 1:
        raise ValueError(f"{n_rows} rows are too few for train/val/test splits (sizes {n_train}/{n_val}/{n_test})")
    return n_train, n_val, n_test
