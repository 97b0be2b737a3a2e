"""The dataset registry and its one entry point, `get_dataset(name, root, **kwargs)`.

Every registered loader is called as `loader(root, **kwargs)` and returns an object with `.train`,
`.val` and `.test`:

- tabular ("parkinsons", "redwine", "whitewine"; "gaussian100", "gaussian200", "gaussian"): float32
  tensors of shape (rows, dim), in `UCIData` / `GaussianData` with the preprocessing facts or true density;
- images ("mnist", "cifar10", "celeba"): torch Datasets of (image in [0, 1], label), in `ImageData`.

`root` follows `resolve_data_root` (argument, else $SCORE_MATCHING_DATA, else ./data); the Gaussian
entries ignore it. `kwargs` go to the loader unchanged (e.g. `protocol="clean"`, `seed=1`,
`distribution="standard"` for gaussian100/200, `image_size=32`).
"""
from __future__ import annotations

import os
from typing import Callable, Union

from ..registry import Registry
from .gaussian import GaussianData, gaussian_dataset, named_gaussian_dataset
from .images import ImageData, load_celeba, load_cifar10
from .mnist import load_mnist
from .uci import UCIData, load_uci

AnyDataset = Union[UCIData, GaussianData, ImageData]
DATASETS: Registry[Callable[..., AnyDataset]] = Registry("dataset")


@DATASETS.register("parkinsons")
def _parkinsons(root: str | os.PathLike | None, **kwargs) -> UCIData:
    """UCI Parkinsons Telemonitoring (D = 15), see `load_uci`."""
    return load_uci("parkinsons", root, **kwargs)


@DATASETS.register("redwine")
def _redwine(root: str | os.PathLike | None, **kwargs) -> UCIData:
    """UCI red Wine Quality (D = 11), see `load_uci`."""
    return load_uci("redwine", root, **kwargs)


@DATASETS.register("whitewine")
def _whitewine(root: str | os.PathLike | None, **kwargs) -> UCIData:
    """UCI white Wine Quality (D = 11), see `load_uci`."""
    return load_uci("whitewine", root, **kwargs)


@DATASETS.register("gaussian")
def _gaussian(root: str | os.PathLike | None, *, dim: int, **kwargs) -> GaussianData:
    """A `dim`-dimensional Gaussian, see `gaussian_dataset`; `root` is unused."""
    return gaussian_dataset(dim, **kwargs)


@DATASETS.register("gaussian100")
def _gaussian100(root: str | os.PathLike | None, **kwargs) -> GaussianData:
    """The paper's 100-dimensional Gaussian, see `named_gaussian_dataset`; `root` is unused."""
    return named_gaussian_dataset(100, **kwargs)


@DATASETS.register("gaussian200")
def _gaussian200(root: str | os.PathLike | None, **kwargs) -> GaussianData:
    """The paper's 200-dimensional Gaussian, see `named_gaussian_dataset`; `root` is unused."""
    return named_gaussian_dataset(200, **kwargs)


DATASETS.register("mnist")(load_mnist)
DATASETS.register("cifar10")(load_cifar10)
DATASETS.register("celeba")(load_celeba)


def get_dataset(name: str, root: str | os.PathLike | None = None, **kwargs) -> AnyDataset:
    """Load registered dataset `name` (see the module docstring); an unknown name lists the valid ones."""
    return DATASETS.get(name)(root, **kwargs)
