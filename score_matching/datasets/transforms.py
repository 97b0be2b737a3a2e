"""Tensor transforms for image data: dequantisation, the NICE logit transforms with their log-determinant,
and fitting images to a square size.

NICE on MNIST has two pre-processings (`NICE_PREPROCESSINGS`):
- "ssm", the sliced-score-matching code's (ermongroup/sliced_score_matching, `runners/nice_runner.py`),
  which the paper's table 4 follows: `v/255 + (u - 1/2)/256` (noise in [-1/512, 1/512], as the paper
  says), clamped to [1e-3, 1 - 1e-3], then `log x - log(1 - x)`; log-likelihoods are reported in that
  logit space. The clamp piles every pixel within 1/512 of 0 or 1 onto ±logit(1e-3), so this map has
  no log-determinant and there is no pixel-space likelihood.
- "bijective": the standard `(v + u)/256`, then the smooth squashing `s = alpha + (1 - 2 alpha) x`
  with alpha = 1e-6 (as in the MAF/RealNVP MNIST pre-processing) instead of a clamp, so the map is a
  bijection: a log-density in logit space plus `logit_transform_logdet(x)` is the log-density of the
  dequantised pixels in [0, 1]^D.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

RESIZE_MODES = ("pad", "bilinear")
NICE_PREPROCESSINGS = ("ssm", "bijective")
# The sliced-score-matching code clamps dequantised pixels to [SSM_CLAMP, 1 - SSM_CLAMP] before the logit.
SSM_CLAMP = 1e-3


def uniform_dequantize(x_uint8: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """(x + u) / 256 with u ~ U[0, 1) elementwise: float32 values in [0, 1) from 8-bit integers."""
    if x_uint8.dtype != torch.uint8:
        raise TypeError(f"uniform_dequantize expects a torch.uint8 tensor, got {x_uint8.dtype}")
    noise = torch.rand(x_uint8.shape, generator=generator, device=x_uint8.device)
    return (x_uint8.to(torch.float32) + noise) / 256.0


def ssm_dequantize(x_uint8: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """v/255 + (u − 1/2)/256 with u ~ U[0, 1) elementwise: the sliced-score-matching code's float32
    dequantisation of 8-bit integers (values may leave [0, 1] by up to 1/512)."""
    if x_uint8.dtype != torch.uint8:
        raise TypeError(f"ssm_dequantize expects a torch.uint8 tensor, got {x_uint8.dtype}")
    noise = torch.rand(x_uint8.shape, generator=generator, device=x_uint8.device)
    return x_uint8.to(torch.float32) / 255.0 + (noise - 0.5) / 256.0


def clamped_logit_transform(x: torch.Tensor, clamp: float = SSM_CLAMP) -> torch.Tensor:
    """y = logit(min(max(x, clamp), 1 − clamp)), the sliced-score-matching code's transform (no inverse)."""
    if not 0.0 < clamp < 0.5:
        raise ValueError(f"clamp must lie in (0, 0.5), got {clamp}")
    clamped = x.clamp(clamp, 1.0 - clamp)
    return torch.log(clamped) - torch.log1p(-clamped)


def _check_alpha(alpha: float) -> None:
    if not 0.0 <= alpha < 0.5:
        raise ValueError(f"alpha must lie in [0, 0.5), got {alpha}")


def logit_transform(x: torch.Tensor, alpha: float = 1e-6) -> torch.Tensor:
    """y = logit(alpha + (1 - 2 alpha) x) = log s - log(1 - s), for x in [0, 1]."""
    _check_alpha(alpha)
    squashed = alpha + (1.0 - 2.0 * alpha) * x
    return torch.log(squashed) - torch.log1p(-squashed)


def inverse_logit_transform(y: torch.Tensor, alpha: float = 1e-6) -> torch.Tensor:
    """x = (sigmoid(y) - alpha) / (1 - 2 alpha), the inverse of `logit_transform`."""
    _check_alpha(alpha)
    return (torch.sigmoid(y) - alpha) / (1.0 - 2.0 * alpha)


def logit_transform_logdet(x: torch.Tensor, alpha: float = 1e-6) -> torch.Tensor:
    """log |det d logit_transform(x) / dx| per sample, summed over all but the first (batch) dimension.

    Each coordinate contributes log(1 - 2 alpha) - log s - log(1 - s), s = alpha + (1 - 2 alpha) x; so
    log p_pixels(x) = log p_logit(logit_transform(x)) + logit_transform_logdet(x).
    """
    _check_alpha(alpha)
    squashed = alpha + (1.0 - 2.0 * alpha) * x
    per_coordinate = math.log1p(-2.0 * alpha) - torch.log(squashed) - torch.log1p(-squashed)
    return per_coordinate.reshape(x.shape[0], -1).sum(dim=1)


def fit_image_size(images: torch.Tensor, size: int, mode: str = "pad") -> torch.Tensor:
    """Bring square images (..., C, H, H) to (..., C, size, size).

    "pad" adds equal zero borders (size - H must be even and >= 0, e.g. 28 -> 32 adds 2 pixels a side);
    "bilinear" resamples with antialiasing.
    """
    if mode not in RESIZE_MODES:
        raise ValueError(f"unknown resize mode {mode!r}; valid: {list(RESIZE_MODES)}")
    height, width = images.shape[-2:]
    if height != width:
        raise ValueError(f"expected square images, got {height}x{width}")
    if size < 1:
        raise ValueError(f"image size must be positive, got {size}")
    if size == height:
        return images
    if mode == "pad":
        border, odd = divmod(size - height, 2)
        if border < 0 or odd:
            raise ValueError(f"'pad' needs size - {height} to be even and >= 0, got size {size}; use 'bilinear'")
        return F.pad(images, (border, border, border, border))
    batched = images.reshape(-1, *images.shape[-3:])
    resized = F.interpolate(batched, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    return resized.reshape(*images.shape[:-2], size, size)
