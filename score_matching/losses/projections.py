"""Random projection vectors v with E[v vᵀ] = I, for sliced score matching."""
from __future__ import annotations

import math

import torch
from torch import Tensor

from score_matching.losses.common import check_choice

PROJECTIONS = ("rademacher", "gaussian", "sphere")


def sample_projections(
    like: Tensor, projection: str = "rademacher", generator: torch.Generator | None = None
) -> Tensor:
    """Random vectors shaped, typed and placed like `like`, one per row, with E[v vᵀ] = I.

    Each row (all trailing dims flattened, D entries) is drawn independently:
    - "rademacher": i.i.d. ±1 entries;
    - "gaussian": i.i.d. N(0, 1) entries;
    - "sphere": uniform on the sphere of radius √D (a normalised Gaussian times √D), the scaling
      that makes E[v vᵀ] = I (a unit-norm v would give I/D).
    """
    check_choice("projection", projection, PROJECTIONS)
    kwargs = dict(dtype=like.dtype, device=like.device, generator=generator)
    if projection == "rademacher":
        return torch.randint(0, 2, like.shape, **kwargs) * 2 - 1
    v = torch.randn(like.shape, **kwargs)
    if projection == "sphere":
        flat = v.reshape(v.shape[0], -1)
        v = (flat * (math.sqrt(flat.shape[1]) / flat.norm(dim=1, keepdim=True))).reshape(like.shape)
    return v
