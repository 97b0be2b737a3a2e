"""Optimiser from the config and the `optimize_fn` step: warm-up, gradient clipping, update."""
from __future__ import annotations

from typing import Callable, Iterable

import torch
from ml_collections import ConfigDict

OPTIMIZERS = ("adam", "adamw", "rmsprop")


def get_optimizer(config: ConfigDict, params: Iterable[torch.nn.Parameter]) -> torch.optim.Optimizer:
    """Adam, AdamW or RMSprop with the config's learning rate, eps and weight decay (Adam's betas:
    optim.beta1, 0.999; RMSprop's smoothing constant: torch's 0.99, as the DKEF code used it).

    Adam's and RMSprop's weight decay is an L2 term added to the gradient, AdamW's is decoupled.
    """
    optim = config.optim
    if optim.optimizer not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {optim.optimizer!r}; valid: {list(OPTIMIZERS)}")
    if optim.optimizer == "rmsprop":
        return torch.optim.RMSprop(params, lr=optim.lr, eps=optim.eps, weight_decay=optim.weight_decay)
    cls = torch.optim.Adam if optim.optimizer == "adam" else torch.optim.AdamW
    return cls(params, lr=optim.lr, betas=(optim.beta1, 0.999), eps=optim.eps, weight_decay=optim.weight_decay)


def get_optimize_fn(config: ConfigDict) -> Callable[[torch.optim.Optimizer, Iterable[torch.nn.Parameter], int], float]:
    """A function (optimizer, params, step) -> grad norm that warms up the learning rate linearly
    over `optim.warmup` steps, clips the gradient norm to `optim.grad_clip` (if > 0) and steps."""
    lr, warmup, grad_clip = config.optim.lr, config.optim.warmup, config.optim.grad_clip

    def optimize_fn(optimizer: torch.optim.Optimizer, params: Iterable[torch.nn.Parameter], step: int) -> float:
        params = [p for p in params if p.grad is not None]
        if warmup > 0:
            for group in optimizer.param_groups:
                group["lr"] = lr * min(1.0, (step + 1) / warmup)
        max_norm = grad_clip if grad_clip > 0 else float("inf")
        grad_norm = torch.nn.utils.clip_grad_norm_(params, max_norm) if params else torch.zeros(())
        optimizer.step()
        return float(grad_norm)

    return optimize_fn
