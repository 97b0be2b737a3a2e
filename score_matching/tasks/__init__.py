"""Tasks: what training and evaluating one family of host models means.

A task builder `build(config, device, model_transform) -> Task` loads the data, builds the host
model, hands it to `model_transform(model, example_inputs)` (the hook where `main.py` applies
patches; the tasks know nothing about what it does) and returns the step-level pieces the loop
needs. Tasks are registered by the model names they serve.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch
from ml_collections import ConfigDict
from torch import Tensor, nn

from score_matching.registry import Registry

ModelTransform = Callable[[nn.Module, tuple], nn.Module]


@dataclass
class Task:
    """The pieces of one experiment that the generic loop calls."""

    model: nn.Module
    n_train: int
    get_batch: Callable[[Tensor, int], Any]  # (training-row indices, step) -> a batch on the device
    loss_fn: Callable[[nn.Module, Any], Tensor]  # (model or its DDP wrapper, batch) -> scalar loss
    evaluate: Callable[[nn.Module], dict[str, float]]  # full evaluation, for --mode=eval
    quick_eval: Callable[[nn.Module], dict[str, float]]  # a cheap test loss, during training
    sample: Callable[[nn.Module, int, torch.Generator], Tensor] | None = None  # images in [0, 1]
    prepare_eval: Callable[[nn.Module], None] | None = None  # e.g. DKEF's refit of α on all data
    val_loss: Callable[[nn.Module], float] | None = None  # validation loss for model selection (lower is better)


TASKS: Registry[Callable[[ConfigDict, torch.device, ModelTransform], Task]] = Registry(
    "task", modules=tuple(f"score_matching.tasks.{name}" for name in ("ncsn", "dkef", "nice", "vae")))


def register_task(*model_names: str):
    """Registers a task builder for each of `model_names`."""

    def decorator(fn):
        for name in model_names:
            TASKS.register(name)(fn)
        return fn

    return decorator


def build_task(config: ConfigDict, device: torch.device, model_transform: ModelTransform) -> Task:
    """The task serving `config.model.name`."""
    return TASKS.get(config.model.name)(config, device, model_transform)
