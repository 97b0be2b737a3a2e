"""The sample-quality part of an image task's evaluation, as configured by config.eval.

- MNIST data and eval.classifier_fd_samples > 0: `mnist_classifier_fd` (NOT comparable to
  published FIDs) against the test split, with the classifier at eval.classifier_path (trained
  there on first use), and the classifier's label statistics (`classifier_confident_share`,
  `classifier_confident_classes`, `classifier_class_entropy` at eval.confidence_threshold) of the
  samples and, as their ceiling, of the test images (`test_images_classifier_*`);
- eval.inception_weights set: the standard `fid` with eval.fid_samples samples against the
  training split.
Samples are drawn once, as many as the larger of the two counts; every value is reported with
its sample count and reference-set size. Reference statistics are cached in eval.cache_dir.
"""
from __future__ import annotations

import logging
import pathlib
from typing import Callable

import torch
from ml_collections import ConfigDict
from torch import Tensor
from torch.utils.data import Dataset

from score_matching.evaluation.inception import load_inception, missing_weights_message
from score_matching.evaluation.mnist_classifier import CLASSIFIER_FILE, FEATURE_DIM, load_or_train
from score_matching.evaluation.sample_quality import (
    classifier_label_statistics,
    inception_fid,
    mnist_classifier_fd,
    to_classifier_size,
)
from score_matching.evaluation.statistics_cache import file_digest, resolve_cache_dir

logger = logging.getLogger(__name__)


def dataset_images(dataset: Dataset) -> Tensor:
    """All images of an (image, label) dataset, stacked on the CPU."""
    return torch.stack([dataset[i][0] for i in range(len(dataset))])


def classifier_fd_count(config: ConfigDict) -> int:
    """How many samples `mnist_classifier_fd` uses: eval.classifier_fd_samples on MNIST, else 0."""
    n = config.eval.classifier_fd_samples
    if config.data.dataset != "mnist" or n == 0:
        return 0
    if n <= FEATURE_DIM:
        raise ValueError(
            f"config.eval.classifier_fd_samples={n} is too few for a Fréchet distance of {FEATURE_DIM}-d features "
            f"(the covariance would be singular); use 0 to skip it, or more than {FEATURE_DIM}"
        )
    return n


def fid_count(config: ConfigDict) -> int:
    """How many samples the standard FID uses: eval.fid_samples when eval.inception_weights is set, else 0."""
    if not config.eval.inception_weights:
        return 0
    if config.eval.fid_samples < 2:
        raise ValueError(
            f"config.eval.fid_samples={config.eval.fid_samples} must be >= 2 when eval.inception_weights is set"
        )
    return config.eval.fid_samples


def image_sample_metrics(
    config: ConfigDict, train: Dataset, test: Dataset, draw: Callable[[int], Tensor], device: torch.device
) -> dict[str, float]:
    """The configured sample-quality metrics of `draw(n)` (n images in [0, 1]) against train/test."""
    n_fd, n_fid = classifier_fd_count(config), fid_count(config)
    if n_fid == 0 and config.data.dataset != "mnist":
        logger.info("standard FID skipped. %s", missing_weights_message(""))
    if max(n_fd, n_fid) == 0:
        return {}
    cache_dir = resolve_cache_dir(config.eval.cache_dir)
    # The networks are loaded first, so that a missing file fails before the (long) sampling.
    if n_fd:
        classifier_path = pathlib.Path(config.eval.classifier_path or cache_dir / CLASSIFIER_FILE)
        classifier = load_or_train(classifier_path, config.data.root or None)
    if n_fid:
        extractor = load_inception(config.eval.inception_weights, device)
    if n_fd:
        logger.info("sample metrics: mnist_classifier_fd of %d samples against the %d test images (classifier %s)",
                    n_fd, len(test), classifier_path)
    if n_fid:
        logger.info("sample metrics: FID of %d samples against the %d training images", n_fid, len(train))
    samples = draw(max(n_fd, n_fid)).cpu()
    size = config.data.image_size
    metrics: dict[str, float] = {}
    if n_fd:
        metrics["mnist_classifier_fd"] = mnist_classifier_fd(
            samples[:n_fd], classifier, f"mnist-cnn-{file_digest(classifier_path)}", lambda: dataset_images(test),
            f"mnist{size}-test", len(test), cache_dir,
        )
        metrics["mnist_classifier_fd_samples"] = n_fd
        metrics["mnist_classifier_fd_reference_images"] = len(test)
        threshold = config.eval.confidence_threshold
        for prefix, images in (("", samples[:n_fd]), ("test_images_", dataset_images(test))):
            labelled = classifier_label_statistics(classifier, to_classifier_size(images), threshold)
            metrics.update({f"{prefix}classifier_{key}": value for key, value in labelled.items()})
    if n_fid:
        metrics["fid"] = inception_fid(
            samples[:n_fid], extractor, f"tf-inception-pool3-{file_digest(config.eval.inception_weights)}",
            lambda: dataset_images(train), f"{config.data.dataset}{size}-train", len(train), cache_dir,
            config.eval.batch_size,
        )
        metrics["fid_samples"] = n_fid
        metrics["fid_reference_images"] = len(train)
    return metrics
