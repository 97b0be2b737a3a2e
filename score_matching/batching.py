"""Deterministic, step-indexed mini-batches: batch k is a function of (seed, step) alone.

No iterator state needs checkpointing, a resumed run sees exactly the batches an uninterrupted
one would, and each of `world_size` processes takes its own shard of the same global batch.
"""
from __future__ import annotations

import torch
from torch import Tensor

_EPOCH_STRIDE = 1_000_003  # separates the permutation seeds of successive epochs


def epoch_seed(seed: int, epoch: int) -> int:
    """The seed of epoch `epoch`'s randomness (its shuffle, its dequantisation noise)."""
    return seed + _EPOCH_STRIDE * epoch


def epoch_and_position(step: int, n: int, batch_size: int) -> tuple[int, int]:
    """(epoch, batch index within the epoch) of global batch `step`."""
    return divmod(step, n // batch_size)


def batch_indices(n: int, batch_size: int, step: int, seed: int, rank: int = 0, world_size: int = 1) -> Tensor:
    """Row indices of this process's shard of global batch `step` (epochs reshuffle, last partial batch dropped)."""
    if batch_size < 1 or batch_size > n:
        raise ValueError(f"batch_size must be in [1, {n}] for {n} rows, got {batch_size}")
    if batch_size % world_size:
        raise ValueError(f"global batch_size {batch_size} must be divisible by the {world_size} processes")
    epoch, k = epoch_and_position(step, n, batch_size)
    order = torch.randperm(n, generator=torch.Generator().manual_seed(epoch_seed(seed, epoch)))
    local = batch_size // world_size
    start = k * batch_size + rank * local
    return order[start : start + local]
