"""Image data sets as torch Datasets of (float32 image (C, H, W) in [0, 1], integer label): the shared
container and train/val split, plus CIFAR-10 and CelebA from local folders in torchvision's layout."""
from __future__ import annotations

import os
import pickle
from dataclasses import dataclass

import numpy as np
import torch
import torchvision
from torch.utils.data import Dataset
from torchvision import transforms as tv_transforms

from .paths import find_dir, resolve_data_root
from .transforms import RESIZE_MODES, fit_image_size

CIFAR10_TRAIN_FILES = tuple(f"data_batch_{i}" for i in range(1, 6))
CIFAR10_TEST_FILES = ("test_batch",)
CELEBA_FILES = (
    "list_eval_partition.txt", "list_attr_celeba.txt", "identity_CelebA.txt",
    "list_bbox_celeba.txt", "list_landmarks_align_celeba.txt",
)


@dataclass(frozen=True)
class ImageData:
    """Train/val/test Datasets, each item an (image, label) pair with image of shape `image_shape`."""

    name: str
    train: Dataset
    val: Dataset
    test: Dataset
    image_shape: tuple[int, int, int]


class UInt8ImageDataset(Dataset):
    """8-bit images (N, C, H, H) served as float32 x/255 in [0, 1], brought to `image_size` by `resize`.

    `images` keeps the raw uint8 tensor for whole-array work (e.g. `uniform_dequantize` for NICE).
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, image_size: int | None = None, resize: str = "pad"):
        if images.dtype != torch.uint8 or images.dim() != 4:
            raise ValueError(f"images must be uint8 of shape (N, C, H, W), got {images.dtype} {tuple(images.shape)}")
        if labels.shape != (images.shape[0],):
            raise ValueError(f"labels must have shape ({images.shape[0]},), got {tuple(labels.shape)}")
        if resize not in RESIZE_MODES:
            raise ValueError(f"unknown resize mode {resize!r}; valid: {list(RESIZE_MODES)}")
        self.images = images
        self.labels = labels
        self.image_size = images.shape[-1] if image_size is None else image_size
        self.resize = resize
        fit_image_size(images[:1].float(), self.image_size, resize)  # fail now, not at the first batch

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        image = self.images[index].to(torch.float32) / 255.0
        return fit_image_size(image, self.image_size, self.resize), int(self.labels[index])


def split_train_val(n: int, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices (train, val): a `np.random.RandomState(seed)` permutation, the last round(n * val_fraction) as val.

    With seed 2019 and val_fraction 0.1 this is the MNIST split of the sliced-score-matching code.
    """
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must lie in (0, 1), got {val_fraction}")
    permutation = np.random.RandomState(seed).permutation(n)
    n_train = n - round(n * val_fraction)
    if n_train < 1 or n_train == n:
        raise ValueError(f"val_fraction {val_fraction} leaves an empty split of {n} items")
    return permutation[:n_train], permutation[n_train:]


def read_cifar10_batches(folder: str | os.PathLike, names: tuple[str, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    """Images (N, 3, 32, 32) uint8 and labels (N,) int64 from CIFAR-10 python pickle batches in `folder`.

    Only read files you trust: the format is Python pickle.
    """
    missing = [name for name in names if not os.path.isfile(os.path.join(folder, name))]
    if missing:
        raise FileNotFoundError(f"CIFAR-10 folder {folder} lacks {missing}; it needs {list(names)}")
    images, labels = [], []
    for name in names:
        path = os.path.join(folder, name)
        with open(path, "rb") as handle:
            batch = pickle.load(handle, encoding="latin1")
        if not isinstance(batch, dict) or "data" not in batch or "labels" not in batch:
            raise ValueError(f"{path}: not a CIFAR-10 batch (a pickled dict with 'data' and 'labels')")
        data = np.asarray(batch["data"])
        if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
            raise ValueError(f"{path}: 'data' must be uint8 of shape (N, 3072), got {data.dtype} {data.shape}")
        batch_labels = np.asarray(batch["labels"], dtype=np.int64)
        if batch_labels.shape != (data.shape[0],):
            raise ValueError(f"{path}: {batch_labels.shape[0]} labels for {data.shape[0]} images")
        images.append(data.reshape(-1, 3, 32, 32))
        labels.append(batch_labels)
    return torch.from_numpy(np.concatenate(images)), torch.from_numpy(np.concatenate(labels))


def split_image_data(
    name: str,
    train: tuple[torch.Tensor, torch.Tensor],
    test: tuple[torch.Tensor, torch.Tensor],
    image_size: int,
    resize: str,
    val_fraction: float,
    split_seed: int,
) -> ImageData:
    """ImageData from uint8 (images, labels) pairs: a seeded train/val split of `train`, and `test`."""
    images, labels = train
    train_idx, val_idx = split_train_val(images.shape[0], val_fraction, split_seed)
    return ImageData(
        name=name,
        train=UInt8ImageDataset(images[train_idx], labels[train_idx], image_size, resize),
        val=UInt8ImageDataset(images[val_idx], labels[val_idx], image_size, resize),
        test=UInt8ImageDataset(*test, image_size, resize),
        image_shape=(images.shape[1], image_size, image_size),
    )


def load_cifar10(
    root: str | os.PathLike | None = None,
    *,
    image_size: int = 32,
    resize: str = "pad",
    val_fraction: float = 0.1,
    split_seed: int = 2019,
) -> ImageData:
    """CIFAR-10 from `<root>/cifar-10-batches-py/` (torchvision's layout) or `<root>/cifar10/cifar-10-batches-py/`.

    train/val come from the five training batches (`split_train_val`), test is `test_batch`. The batches
    are read directly rather than through torchvision, whose md5 checks reject anything but the full
    original files. `image_size`/`resize` as in `load_mnist` (32 keeps the images as they are).
    """
    folder = find_dir(
        resolve_data_root(root),
        ["cifar-10-batches-py", "cifar10/cifar-10-batches-py"],
        what="CIFAR-10 folder 'cifar-10-batches-py'",
        hint="Download https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz and extract it into the data root.",
    )
    train = read_cifar10_batches(folder, CIFAR10_TRAIN_FILES)
    test = read_cifar10_batches(folder, CIFAR10_TEST_FILES)
    return split_image_data("cifar10", train, test, image_size, resize, val_fraction, split_seed)


def load_celeba(
    root: str | os.PathLike | None = None, *, crop_size: int = 140, image_size: int = 64
) -> ImageData:
    """CelebA from `<root>/celeba/` (torchvision's layout) with its official train/valid/test partition.

    Images are center-cropped to `crop_size` and resized to `image_size`, as the NCSN and
    sliced-score-matching VAE code do; labels are the 40 binary attributes.
    """
    data_root = resolve_data_root(root)
    folder = data_root / "celeba"
    needed = [folder / "img_align_celeba"] + [folder / name for name in CELEBA_FILES]
    missing = [path for path in needed if not path.exists()]
    if missing:
        listing = "\n".join(f"  - {path.resolve()}" for path in missing)
        raise FileNotFoundError(
            f"CelebA is incomplete under data root {data_root.resolve()}; missing:\n{listing}\n"
            "Get img_align_celeba.zip (extract it there) and the five list/identity .txt files from the "
            "CelebA site (https://mmlab.ie.cuhk.edu.hk/projects/CelebA.html) into <data root>/celeba/."
        )
    transform = tv_transforms.Compose(
        [tv_transforms.CenterCrop(crop_size), tv_transforms.Resize(image_size), tv_transforms.ToTensor()]
    )

    def split(name: str) -> Dataset:
        try:
            return torchvision.datasets.CelebA(str(data_root), split=name, transform=transform, download=False)
        except RuntimeError as error:
            raise RuntimeError(
                f"torchvision rejected the CelebA files in {folder.resolve()} ({error}); they must be the "
                "original files, whose md5 sums torchvision checks"
            ) from error

    return ImageData(
        name="celeba", train=split("train"), val=split("valid"), test=split("test"),
        image_shape=(3, image_size, image_size),
    )
