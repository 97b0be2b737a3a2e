"""Sample-quality metrics of generated images, computed against cached reference statistics.

- `mnist_classifier_fd`: Fréchet distance in the penultimate feature space of this project's small
  MNIST classifier (`mnist_classifier`). NOT comparable to published FIDs (another network,
  another feature space); compare it only between runs using the same classifier file and
  sample count.
- `inception_fid`: the standard FID (TF-Inception-v3 pool3), comparable to published FIDs when
  computed with 50k samples against the statistics of the training set, as they are.
Both report the sample count next to the value; a Fréchet distance estimated from N samples is
biased upwards by O(1/N), so values are only comparable at equal N.
"""
from __future__ import annotations

import os
from typing import Callable

import torch.nn.functional as F
from torch import Tensor, nn

from score_matching.datasets.mnist import MNIST_IMAGE_SIDE
from score_matching.evaluation.frechet import frechet_distance, gaussian_statistics
from score_matching.evaluation.inception import inception_features
from score_matching.evaluation.mnist_classifier import MNISTClassifier, classifier_features
from score_matching.evaluation.statistics_cache import cached_statistics

ImageSource = Callable[[], Tensor]  # () -> reference images (N, C, H, W) in [0, 1], called on a cache miss


def to_classifier_size(images: Tensor) -> Tensor:
    """Images (B, 1, H, W) in [0, 1] brought to the classifier's 28×28 (bilinear, antialiased) if needed."""
    if images.ndim != 4 or images.shape[1] != 1:
        raise ValueError(f"MNIST images must have shape (B, 1, H, W), got {tuple(images.shape)}")
    if images.shape[-2:] == (MNIST_IMAGE_SIDE, MNIST_IMAGE_SIDE):
        return images
    side = (MNIST_IMAGE_SIDE, MNIST_IMAGE_SIDE)
    return F.interpolate(images.float(), size=side, mode="bilinear", antialias=True, align_corners=False)


def mnist_classifier_fd(
    samples: Tensor,
    classifier: MNISTClassifier,
    classifier_key: str,
    reference: ImageSource,
    reference_key: str,
    reference_count: int,
    cache_dir: str | os.PathLike,
) -> float:
    """Fréchet distance between samples and the reference images in the classifier's feature space.

    NOT an FID and NOT comparable to published FIDs. The reference statistics are cached under
    (reference_key, classifier_key, reference_count); `reference()` is called only to fill the cache.
    """
    mu_ref, sigma_ref = cached_statistics(
        cache_dir, reference_key, classifier_key, reference_count,
        lambda: classifier_features(classifier, to_classifier_size(reference())).numpy(),
    )
    mu, sigma = gaussian_statistics(classifier_features(classifier, to_classifier_size(samples)).numpy())
    return frechet_distance(mu, sigma, mu_ref, sigma_ref)


def inception_fid(
    samples: Tensor,
    extractor: nn.Module,
    extractor_key: str,
    reference: ImageSource,
    reference_key: str,
    reference_count: int,
    cache_dir: str | os.PathLike,
    batch_size: int,
) -> float:
    """The standard FID of samples against the reference images (TF-Inception-v3 pool3 features).

    The reference statistics are cached as in `mnist_classifier_fd`.
    """
    mu_ref, sigma_ref = cached_statistics(
        cache_dir, reference_key, extractor_key, reference_count,
        lambda: inception_features(extractor, reference(), batch_size),
    )
    mu, sigma = gaussian_statistics(inception_features(extractor, samples, batch_size))
    return frechet_distance(mu, sigma, mu_ref, sigma_ref)
