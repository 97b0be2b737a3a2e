"""Shared pieces of the losses: function types, the score of a log-density, input checks."""
from __future__ import annotations

from typing import Callable, Sequence

import torch
from torch import Tensor

ScoreFn = Callable[[Tensor], Tensor]
LogDensityFn = Callable[[Tensor], Tensor]
ConditionalScoreFn = Callable[[Tensor, Tensor], Tensor]


def score_from_log_density(log_density_fn: LogDensityFn, functional: bool = False) -> ScoreFn:
    """The score function x -> ∇_x log_density_fn(x), built with a graph for further derivatives.

    log_density_fn maps (B, ...) -> (B,). If x does not require grad the score is taken at a
    detached copy that does; if it does, the score stays a function of x itself, so a loss can
    differentiate it again. With functional=True the gradient is taken by `torch.func.grad`, which
    also works inside torch.func transforms (needed by `hessian_trace(method="forward")`) but not
    with old-style custom autograd Functions; the default uses `torch.autograd.grad`.
    """

    def score_fn(x: Tensor) -> Tensor:
        with torch.enable_grad():
            if functional:
                return torch.func.grad(lambda z: log_density_fn(z).sum())(x)
            inputs = requires_grad_input(x)
            (score,) = torch.autograd.grad(log_density_fn(inputs).sum(), inputs, create_graph=True)
        return score

    return score_fn


def requires_grad_input(x: Tensor) -> Tensor:
    """x itself if it requires grad (keeping its graph), else a detached copy that requires grad."""
    return x if x.requires_grad else x.detach().requires_grad_(True)


def per_sample_sum(t: Tensor) -> Tensor:
    """Sum over all but the first (batch) dimension: (B, ...) -> (B,)."""
    return t.reshape(t.shape[0], -1).sum(dim=1)


def replicate(x: Tensor, n: int) -> Tensor:
    """n stacked copies of x along the batch dimension: (B, ...) -> (n·B, ...), copy-major."""
    return x.unsqueeze(0).expand(n, *x.shape).reshape(n * x.shape[0], *x.shape[1:])


def standard_noise(x: Tensor, noise: Tensor | None, generator: torch.Generator | None) -> Tensor:
    """The given standard-normal draw (checked to have x's shape), or a fresh one like x."""
    if noise is None:
        return torch.randn(x.shape, dtype=x.dtype, device=x.device, generator=generator)
    if not isinstance(noise, Tensor) or noise.shape != x.shape:
        shape = tuple(noise.shape) if isinstance(noise, Tensor) else type(noise).__name__
        raise ValueError(f"noise must be a tensor of the shape of x {tuple(x.shape)}, got {shape}")
    return noise


def check_batch(x: Tensor, name: str = "x") -> None:
    """Raise unless x is a tensor with a non-empty batch dimension and at least one feature dim."""
    if not isinstance(x, Tensor) or x.dim() < 2 or x.shape[0] == 0:
        shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
        raise ValueError(f"{name} must be a tensor of shape (batch >= 1, ...features), got {shape}")


def check_positive_int(name: str, value: int) -> None:
    """Raise unless value is an int >= 1."""
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be an int >= 1, got {value!r}")


def check_optional_positive_int(name: str, value: int | None) -> None:
    """Raise unless value is None or an int >= 1."""
    if value is not None:
        check_positive_int(name, value)


def check_positive(name: str, value: float) -> None:
    """Raise unless value is a finite number > 0."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < float("inf"):
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")


def check_choice(name: str, value: str, choices: Sequence[str]) -> None:
    """Raise unless value is one of choices, listing them."""
    if value not in choices:
        raise ValueError(f"unknown {name} {value!r}; valid: {list(choices)}")
