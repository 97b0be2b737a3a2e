"""UCI Parkinsons Telemonitoring and Wine Quality (red, white) under the DKEF / sliced-score-matching protocol.

Protocol "paper" (the default) is what produced the numbers the paper compares with
(see the project note `uci-dkef-protocol.md`); in order:

1. Load the file (`;` with a header as UCI ships it, or `,` without one; detected).
2. Drop the protocol's columns: `subject#`, `age`, `sex` for Parkinsons; `quality` for wine.
3. Parkinsons only: drop one column of every pair with |correlation| > 0.98, over all rows
   (removes Jitter(%), Jitter:RAP, Shimmer, Shimmer:APQ3, leaving D = 15).
4. Wine only: dequantise each column with U(-g, g) noise, g = median gap between its distinct values.
5. Shuffle the rows with `np.random.RandomState(2019)` (the same permutation as `np.random.seed(2019)`).
6. Fit PCA whitening on all rows (test rows included: the reference code's leakage, kept on purpose).
7. Split: test = last min(1000, n // 10) rows, val = the min(1000, (n - test) // 10) rows before, train = rest.
   This is the sliced-score-matching rule (red 1296/144/159, white 3969/440/489, Parkinsons 4760/528/587),
   not the 500/1000 reported for the original DKEF code.
8. Whiten every split, add N(0, 0.05^2) noise once to every split (all three data sets, as the reference
   code does) and cast to float32.

Protocol "clean" is identical except that step 6 fits the whitening on the training split only.
Randomness in steps 4 and 8 comes from `seed`; the reference code left it unseeded.
"""
from __future__ import annotations

import os
import pathlib
import types
from dataclasses import dataclass

import numpy as np
import torch

from .paths import find_file, resolve_data_root
from .preprocessing import dequantize_by_median_gap, drop_correlated_columns, fit_pca_whitening, holdout_sizes
from .tabular import read_numeric_table

PROTOCOLS = ("paper", "clean")

_PARKINSONS_COLUMNS = (
    "subject#", "age", "sex", "test_time", "motor_UPDRS", "total_UPDRS", "Jitter(%)", "Jitter(Abs)",
    "Jitter:RAP", "Jitter:PPQ5", "Jitter:DDP", "Shimmer", "Shimmer(dB)", "Shimmer:APQ3", "Shimmer:APQ5",
    "Shimmer:APQ11", "Shimmer:DDA", "NHR", "HNR", "RPDE", "DFA", "PPE",
)
_WINE_COLUMNS = (
    "fixed acidity", "volatile acidity", "citric acid", "residual sugar", "chlorides", "free sulfur dioxide",
    "total sulfur dioxide", "density", "pH", "sulphates", "alcohol", "quality",
)


@dataclass(frozen=True)
class _UCISpec:
    filename: str
    columns: tuple[str, ...]
    dropped: tuple[str, ...]
    decorrelate: bool
    dequantize: bool


_SPECS = types.MappingProxyType({
    "parkinsons": _UCISpec("parkinsons_updrs.data", _PARKINSONS_COLUMNS, ("subject#", "age", "sex"), True, False),
    "redwine": _UCISpec("winequality-red.csv", _WINE_COLUMNS, ("quality",), False, True),
    "whitewine": _UCISpec("winequality-white.csv", _WINE_COLUMNS, ("quality",), False, True),
})
UCI_NAMES = tuple(_SPECS)


@dataclass(frozen=True)
class UCIData:
    """Whitened UCI splits (float32, shape (rows, dim)) and the facts of how they were made.

    `whiten_mean` and `whiten_matrix` map a preprocessed row x (before the final noise) to
    `(x - whiten_mean) @ whiten_matrix`; `columns` are the kept columns, in order.
    """

    name: str
    protocol: str
    train: torch.Tensor
    val: torch.Tensor
    test: torch.Tensor
    columns: tuple[str, ...]
    dropped_columns: tuple[str, ...]
    correlated_columns: tuple[str, ...]
    whiten_mean: torch.Tensor
    whiten_matrix: torch.Tensor

    @property
    def dim(self) -> int:
        """Number of features D."""
        return len(self.columns)


def _spec(name: str) -> _UCISpec:
    if name not in _SPECS:
        raise ValueError(f"unknown UCI data set {name!r}; valid: {list(UCI_NAMES)}")
    return _SPECS[name]


def _normalise(name: str) -> str:
    return name.strip().strip('"').strip().lower()


def find_uci_file(name: str, root: str | os.PathLike | None = None) -> pathlib.Path:
    """The file of UCI data set `name` under `<root>/uci/` or `<root>/`; FileNotFoundError says where it looked."""
    spec = _spec(name)
    return find_file(
        resolve_data_root(root),
        [f"uci/{spec.filename}", spec.filename],
        what=f"UCI {name} file {spec.filename!r}",
        hint=f"Download {spec.filename} from the UCI repository and put it in <data root>/uci/ "
        "(`;`-separated with a header as UCI ships it, or `,`-separated without a header).",
    )


def read_uci_table(name: str, root: str | os.PathLike | None = None) -> np.ndarray:
    """The raw table of UCI data set `name` (all columns, file order), from `<root>/uci/` or `<root>/`."""
    spec = _spec(name)
    path = find_uci_file(name, root)
    header, values = read_numeric_table(path)
    if values.shape[1] != len(spec.columns):
        raise ValueError(f"{path}: {values.shape[1]} columns, expected {len(spec.columns)}: {list(spec.columns)}")
    if header is not None and [_normalise(h) for h in header] != [_normalise(c) for c in spec.columns]:
        raise ValueError(f"{path}: header {header} does not match the expected columns {list(spec.columns)}")
    return values


def load_uci(
    name: str,
    root: str | os.PathLike | None = None,
    *,
    protocol: str = "paper",
    noise_std: float = 0.05,
    seed: int = 0,
    shuffle_seed: int = 2019,
    max_abs_correlation: float = 0.98,
    holdout_cap: int = 1000,
    holdout_divisor: int = 10,
) -> UCIData:
    """Load UCI data set `name` ("parkinsons", "redwine" or "whitewine") under `protocol` ("paper"|"clean").

    The steps and their defaults are in the module docstring; `seed` drives the dequantisation and the
    N(0, noise_std^2) noise, `shuffle_seed` the row permutation.
    """
    spec = _spec(name)
    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown protocol {protocol!r}; valid: {list(PROTOCOLS)}")
    if noise_std < 0:
        raise ValueError(f"noise_std must be >= 0, got {noise_std}")
    values = read_uci_table(name, root)
    keep = [i for i, column in enumerate(spec.columns) if column not in spec.dropped]
    values, columns, correlated = values[:, keep], [spec.columns[i] for i in keep], []
    if spec.decorrelate:
        values, columns, correlated = drop_correlated_columns(values, columns, max_abs_correlation)
    rng = np.random.default_rng(seed)
    if spec.dequantize:
        values = dequantize_by_median_gap(values, columns, rng)
    np.random.RandomState(shuffle_seed).shuffle(values)

    n_train, n_val, _ = holdout_sizes(values.shape[0], holdout_cap, holdout_divisor)
    splits = np.split(values, [n_train, n_train + n_val])
    mean, matrix = fit_pca_whitening(values if protocol == "paper" else splits[0])
    train, val, test = (
        torch.from_numpy(((split - mean) @ matrix + noise_std * rng.standard_normal(split.shape)).astype(np.float32))
        for split in splits
    )
    return UCIData(
        name=name,
        protocol=protocol,
        train=train,
        val=val,
        test=test,
        columns=tuple(columns),
        dropped_columns=spec.dropped,
        correlated_columns=tuple(correlated),
        whiten_mean=torch.from_numpy(mean),
        whiten_matrix=torch.from_numpy(matrix),
    )
