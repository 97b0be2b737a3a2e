"""Sample-quality metrics of generated images, computed against cached reference statistics.

- `mnist_classifier_fd`: Fréchet distance in the penultimate feature space of this project's small
  MNIST classifier (`mnist_classifier`). NOT comparable to published FIDs (another network,
  another feature space); compare it only between runs using the same classifier file and
  sample count.
- `inception_fid`: the standard FID (TF-Inception-v3 pool3), comparable to published FIDs when
  computed with 50k samples against the statistics of the training set, as they are.
Both report the sample count next to the value; a Fréchet distance estimated from N samples is
biased upwards by O(1/N), so values are only comparable at equal N.
- `classifier_label_statistics`: whether samples look like digits at all (the share the classifier
  labels with confidence at least a threshold) and whether every digit is drawn (how many classes
  the confident samples cover, and the normalised entropy of their class histogram, 1 = uniform),
  so that mode collapse shows. On MNIST's own test images these give the ceiling.
"""
from __future__ import annotations

import os
from typing import Callable

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from score_matching.datasets.mnist import MNIST_IMAGE_SIDE
from score_matching.evaluation.frechet import frechet_distance, gaussian_statistics
from score_matching.evaluation.inception import inception_features
from score_matching.evaluation.mnist_classifier import MNISTClassifier, as_float_images, classifier_features
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


@torch.no_grad()
def classifier_label_statistics(
    classifier: nn.Module, images: Tensor, threshold: float, batch_size: int = 1000
) -> dict[str, float]:
    """How digit-like and how diverse images are, by the classifier's labels.

    `confident_share`: the fraction of images whose largest class probability is >= threshold;
    `confident_classes`: how many classes at least one confident image is labelled with;
    `class_entropy`: the entropy of the confident images' label histogram divided by log(classes)
    (1 = every class equally often, 0 = one class or no confident image).
    """
    if not 0.0 < threshold < 1.0:
        raise ValueError(f"confidence threshold must lie in (0, 1), got {threshold}")
    device = next(classifier.parameters()).device
    probabilities = torch.cat([
        F.softmax(classifier(as_float_images(images[start:start + batch_size]).to(device)).double(), dim=1).cpu()
        for start in range(0, images.shape[0], batch_size)
    ])
    n_classes = probabilities.shape[1]
    confidence, labels = probabilities.max(dim=1)
    confident = labels[confidence >= threshold]
    counts = torch.bincount(confident, minlength=n_classes).double()
    shares = counts[counts > 0] / max(len(confident), 1)
    entropy = float((shares * shares.log()).sum().neg()) / math.log(n_classes) + 0.0  # + 0.0: no -0.0
    return {
        "confident_share": len(confident) / images.shape[0],
        "confident_classes": int((counts > 0).sum()),
        "class_entropy": entropy,
    }
