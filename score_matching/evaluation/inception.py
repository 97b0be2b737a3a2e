"""The standard FID's feature extractor: TF-Inception-v3 pool3 (2048-d), weights from a local file.

The network is torch-fidelity's `FeatureExtractorInceptionV3` (a port of the 2015-12-05 TF graph
that FID is defined with, including TF1's bilinear resize to 299×299), which accepts either
torch-fidelity's or pytorch-fid's conversion of the weights (same architecture, same keys). No
weights are downloaded: the file must be on disk.
"""
from __future__ import annotations

import os
import pathlib

import numpy as np
import torch
from torch import Tensor, nn

from score_matching.metrics_log import PhaseProgress

INCEPTION_WEIGHT_FILES = {
    "pt_inception-2015-12-05-6726825d.pth":
        "https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/pt_inception-2015-12-05-6726825d.pth",
    "weights-inception-2015-12-05-6726825d.pth":
        "https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/weights-inception-2015-12-05-6726825d.pth",
}
POOL3_FEATURES = "2048"
# torch-fidelity's registered name of this extractor (its feature-name bookkeeping needs one).
EXTRACTOR_NAME = "inception-v3-compat"


def missing_weights_message(path: str | os.PathLike) -> str:
    """Says which file the standard FID needs, where to get it and which config key points at it."""
    sources = "\n".join(f"  - {name}: {url}" for name, url in INCEPTION_WEIGHT_FILES.items())
    where = f"{str(path)!r} is not a file" if str(path) else "config.eval.inception_weights is '' (unset)"
    return (
        f"The standard FID needs the TF-Inception-v3 weights as a local file, and {where}. "
        "Download one of these files on a machine with internet access:\n"
        f"{sources}\n"
        "copy it to this machine (e.g. to <data root>/inception/) and pass its path as "
        "--config.eval.inception_weights=/path/to/<file>."
    )


def load_inception(weights_path: str | os.PathLike, device: torch.device | str = "cpu") -> nn.Module:
    """The TF-Inception-v3 pool3 feature extractor in eval mode with the weights at `weights_path`.

    Raises FileNotFoundError (saying what to download and where to put it) when the file is absent.
    """
    path = pathlib.Path(weights_path).expanduser() if str(weights_path) else None
    if path is None or not path.is_file():
        raise FileNotFoundError(missing_weights_message(weights_path))
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    extractor = FeatureExtractorInceptionV3(EXTRACTOR_NAME, [POOL3_FEATURES], feature_extractor_weights_path=str(path))
    return extractor.to(device)


def to_uint8_rgb(images: Tensor) -> Tensor:
    """Images (B, 1 or 3, H, W) in [0, 1] as uint8 RGB (grey is repeated over the three channels),
    rounded as torchvision's save_image does."""
    if images.ndim != 4 or images.shape[1] not in (1, 3):
        raise ValueError(f"images must have shape (B, 1 or 3, H, W), got {tuple(images.shape)}")
    pixels = (images.detach().float() * 255 + 0.5).clamp(0, 255).to(torch.uint8)
    return pixels.expand(-1, 3, -1, -1) if pixels.shape[1] == 1 else pixels


def inception_features(extractor: nn.Module, images: Tensor, batch_size: int) -> np.ndarray:
    """Pool3 features (N, 2048) of images (N, C, H, W) in [0, 1], in batches of `batch_size`."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    device = next(extractor.parameters()).device
    starts = range(0, images.shape[0], batch_size)
    progress = PhaseProgress(f"Inception features of {images.shape[0]} images", len(starts), "batches")
    chunks = []
    with torch.no_grad():
        for index, start in enumerate(starts):
            batch = to_uint8_rgb(images[start:start + batch_size]).to(device)
            (features,) = extractor(batch)
            chunks.append(features.cpu().double().numpy())
            progress.update(index + 1)
    return np.concatenate(chunks)
