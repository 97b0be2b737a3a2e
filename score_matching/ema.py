"""Exponential moving average of model parameters (buffers are copied, not averaged)."""
from __future__ import annotations

from typing import Any

import torch
from torch import nn


class ExponentialMovingAverage:
    """Keeps shadow = decay * shadow + (1 - decay) * param after every `update`."""

    def __init__(self, model: nn.Module, decay: float) -> None:
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"EMA decay must be in [0, 1), got {decay}")
        self.decay = decay
        self.shadow = {name: p.detach().clone() for name, p in model.named_parameters()}
        self._backup: dict[str, torch.Tensor] | None = None

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Moves the shadow weights toward the model's current weights."""
        for name, p in model.named_parameters():
            self.shadow[name].lerp_(p.detach(), 1.0 - self.decay)

    @torch.no_grad()
    def swap_in(self, model: nn.Module) -> None:
        """Loads the shadow weights into the model, keeping the live ones for `swap_out`."""
        if self._backup is not None:
            raise RuntimeError("EMA weights are already swapped in")
        self._backup = {name: p.detach().clone() for name, p in model.named_parameters()}
        for name, p in model.named_parameters():
            p.copy_(self.shadow[name])

    @torch.no_grad()
    def swap_out(self, model: nn.Module) -> None:
        """Restores the live weights saved by `swap_in`."""
        if self._backup is None:
            raise RuntimeError("EMA weights are not swapped in")
        for name, p in model.named_parameters():
            p.copy_(self._backup[name])
        self._backup = None

    def state_dict(self) -> dict[str, Any]:
        """The decay and shadow weights."""
        return {"decay": self.decay, "shadow": self.shadow}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Strict restore: the shadow must hold exactly the model's parameters."""
        if set(state["shadow"]) != set(self.shadow):
            missing = sorted(set(self.shadow) - set(state["shadow"]))
            unexpected = sorted(set(state["shadow"]) - set(self.shadow))
            raise KeyError(f"EMA state does not match the model; missing {missing}, unexpected {unexpected}")
        self.decay = state["decay"]
        for name, value in state["shadow"].items():
            self.shadow[name].copy_(value)
