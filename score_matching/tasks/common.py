"""Helpers shared by the tasks: data loading from the config, loss keyword arguments, batching."""
from __future__ import annotations

import logging
from typing import Any, Callable

import torch
from ml_collections import ConfigDict
from torch import Tensor

from score_matching.datasets import ensure_mnist, get_dataset, resolve_data_root
from score_matching.metrics_log import PhaseProgress

logger = logging.getLogger("score_matching")

# Which config.loss fields each loss takes (as keyword arguments).
LOSS_KWARGS = {
    "sm": ("trace",),
    "ssm": ("n_particles", "projection"),
    "ssm_vr": ("n_particles", "projection"),
    "dsm": ("sigma",),
    "cp": ("n_particles",),
    "approx_bp": (),
    "mle": (),
    "anneal_dsm": ("anneal_power",),
    "anneal_ssm_vr": ("n_particles", "projection", "anneal_power"),
}


def loss_kwargs(config: ConfigDict) -> dict[str, Any]:
    """The keyword arguments config.loss gives the loss called config.loss.name."""
    name = config.loss.name
    if name not in LOSS_KWARGS:
        raise ValueError(f"unknown loss {name!r}; valid: {sorted(LOSS_KWARGS)}")
    return {key: config.loss[key] for key in LOSS_KWARGS[name]}


def load_data(config: ConfigDict, **kwargs: Any):
    """get_dataset for config.data, fetching MNIST first when it is missing and downloads are allowed."""
    root = config.data.root or None
    if config.data.dataset == "mnist" and config.data.download:
        ensure_mnist(root)
    data = get_dataset(config.data.dataset, root, **kwargs)
    where = "generated" if config.data.dataset.startswith("gaussian") else f"from data root {resolve_data_root(root).resolve()}"
    logger.info("data: %s %s", config.data.dataset, where)
    return data


def chunked_mean(fn: Callable[[Tensor], Tensor], x: Tensor, chunk: int, phase: str = "") -> float:
    """The row-weighted mean of the scalar fn(part) over x split into chunks of `chunk` rows; with
    `phase`, a long computation reports its progress under that name."""
    parts = x.split(chunk)
    progress = PhaseProgress(phase, len(parts), "batches") if phase else None
    total = 0.0
    for index, part in enumerate(parts):
        total += fn(part).item() * len(part)
        if progress is not None:
            progress.update(index + 1)
    return total / len(x)


def seeded_rows(x: Tensor, n: int, seed: int) -> Tensor:
    """n rows of x (all if fewer) in the random order a generator seeded with `seed` draws."""
    order = torch.randperm(len(x), generator=torch.Generator(device=x.device).manual_seed(seed), device=x.device)
    return x[order[:n]]


def first_rows(x: Tensor, limit: int) -> Tensor:
    """x[:limit] when limit > 0, else x."""
    return x[:limit] if limit > 0 else x


def stack_images(dataset, idx: Tensor, device: torch.device) -> Tensor:
    """The images at rows idx of an (image, label) dataset, stacked on the device."""
    return torch.stack([dataset[i][0] for i in idx.tolist()]).to(device)
