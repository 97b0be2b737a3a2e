"""Ready-made DEQ cells f(z, u) and the block that pairs an injection g(y) with a DEQ.

- `DenseCell`:    f(z, u) = σ(W z + u), W a matrix (the paper's equation 5); with σ = identity
  the linear fixed point z* = (I − W)⁻¹ u of the paper authors' DKEF code.
- `ConvCell`:     f(z, u) = σ(W * z + u), W a convolution kernel (equation 5).
- `ResidualCell`: f(z, u) = h(z) + u for a block h the user gives (the NCSN DEQ-ResBlock); h must
  be a contraction for the fixed point to be well posed — normalise its weights with
  `deq_plugin.norms.normalize_all`.
- `ShortcutResidualCell`: f(z, u) = b(z) / c - z + u for an identity-shortcut block
  b(x) = c (x + r(x)), i.e. r(z) + u without taking the block apart.
- `StackCell`:    f(z, u) = σ(T(z) + u) for a stack T of the user's layers and a σ of theirs.
The activation defaults to softplus: score matching differentiates the cell twice, which needs a
twice-differentiable σ; every offered activation is 1-Lipschitz (identity included), so
normalisation with λ > 1 makes the dense and convolutional cells contractions.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from deq_plugin.norms import normalize_weight
from deq_plugin.registry import Table

ACTIVATIONS: Table[Callable[[Tensor], Tensor]] = Table("activation")


# F.softplus returns x above its threshold; at 40, log(1 + eˣ) = x to within e⁻⁴⁰ ≈ 4e-18, so the
# value is exact in float64 as well, and exp is never taken where float32 would overflow (x > 88).
SOFTPLUS_THRESHOLD = 40.0


@ACTIVATIONS.register("softplus")
def softplus(x: Tensor) -> Tensor:
    """log(1 + eˣ) as F.softplus with threshold `SOFTPLUS_THRESHOLD`.

    Score matching differentiates a DEQ cell two or three times. F.softplus's derivatives are
    finite for every x (a bare logaddexp(x, 0) has NaN second derivatives below x ≈ −88 in
    float32), vmap batches its double backward (torch 2.14), and its double-backward graph keeps
    fewer tensors than the floored-logaddexp form used before.
    """
    return F.softplus(x, beta=1.0, threshold=SOFTPLUS_THRESHOLD)


ACTIVATIONS.register("elu")(F.elu)
ACTIVATIONS.register("tanh")(F.tanh)


@ACTIVATIONS.register("identity")
def identity(x: Tensor) -> Tensor:
    """x itself: a dense cell σ(W z + u) becomes the linear cell W z + u."""
    return x


class DenseCell(nn.Module):
    """f(z, u) = σ(W z + u) on states of shape (B, features)."""

    def __init__(self, features: int, activation: str = "softplus", norm: str = "frobenius", norm_lambda: float = 2.0) -> None:
        super().__init__()
        self.activation_name = activation
        self.activation = ACTIVATIONS.get(activation)
        self.linear = normalize_weight(nn.Linear(features, features, bias=False), norm, norm_lambda)

    def forward(self, z: Tensor, u: Tensor) -> Tensor:
        return self.activation(self.linear(z) + u)


class ConvCell(nn.Module):
    """f(z, u) = σ(W * z + u) on states of shape (B, channels, H, W); 'same' zero padding."""

    def __init__(
        self,
        channels: int,
        kernel_size: int = 3,
        activation: str = "softplus",
        norm: str = "spectral",
        norm_lambda: float = 2.0,
    ) -> None:
        super().__init__()
        if kernel_size % 2 != 1:
            raise ValueError(f"kernel_size must be odd so the state keeps its size, got {kernel_size}")
        self.activation_name = activation
        self.activation = ACTIVATIONS.get(activation)
        conv = nn.Conv2d(channels, channels, kernel_size, padding=kernel_size // 2, bias=False)
        self.conv = normalize_weight(conv, norm, norm_lambda)

    def forward(self, z: Tensor, u: Tensor) -> Tensor:
        return self.activation(self.conv(z) + u)


class ResidualCell(nn.Module):
    """f(z, u, *context) = h(z, *context) + u for a user-given block h (keep h contractive)."""

    def __init__(self, block: nn.Module) -> None:
        super().__init__()
        self.block = block

    def forward(self, z: Tensor, u: Tensor, *context: Tensor) -> Tensor:
        return self.block(z, *context) + u


class ShortcutResidualCell(nn.Module):
    """f(z, u, *context) = block(z, *context) / c - z + u for a block x ↦ c (x + r(x, *context)).

    The cell is r(z, *context) + u with r run inside the user's own block; keep r contractive.
    c (`shortcut_scale`) is 1 for a plain identity shortcut.
    """

    def __init__(self, block: nn.Module, shortcut_scale: float = 1.0) -> None:
        super().__init__()
        if not shortcut_scale > 0:
            raise ValueError(f"shortcut_scale must be > 0, got {shortcut_scale}")
        self.block = block
        self.shortcut_scale = shortcut_scale

    def extra_repr(self) -> str:
        return f"shortcut_scale={self.shortcut_scale:.6g}"

    def forward(self, z: Tensor, u: Tensor, *context: Tensor) -> Tensor:
        out = self.block(z, *context)
        return (out if self.shortcut_scale == 1.0 else out / self.shortcut_scale) - z + u


class StackCell(nn.Module):
    """f(z, u) = σ(T(z) + u) for a layer stack T and an activation module σ."""

    def __init__(self, body: nn.Module, activation: nn.Module) -> None:
        super().__init__()
        self.body = body
        self.activation = activation

    def forward(self, z: Tensor, u: Tensor) -> Tensor:
        return self.activation(self.body(z) + u)


class Activation(nn.Module):
    """An activation from `ACTIVATIONS` as a module."""

    def __init__(self, name: str) -> None:
        super().__init__()
        self.name = name
        self.fn = ACTIVATIONS.get(name)

    def extra_repr(self) -> str:
        return self.name

    def forward(self, x: Tensor) -> Tensor:
        return self.fn(x)


class DEQBlock(nn.Module):
    """(y, *context) ↦ z* of `deq` with u = injection(y): the drop-in replacement for a stack.

    `context` (e.g. noise-level labels) is handed to the cell when `pass_context` is set, so a block
    with signature forward(x, labels) can be replaced by a DEQ whose cell is conditioned the same way.
    """

    def __init__(self, injection: nn.Module, deq: nn.Module, pass_context: bool = False) -> None:
        super().__init__()
        self.injection = injection
        self.deq = deq
        self.pass_context = pass_context

    def forward(self, y: Tensor, *context: Tensor) -> Tensor:
        u = self.injection(y)
        return self.deq(u, context=context) if self.pass_context else self.deq(u)
