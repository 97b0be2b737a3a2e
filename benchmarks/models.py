"""The small models the benchmarks train: a conv score net with an explicit or DEQ core, and energies.

All activations are softplus (or tanh), so every model is twice differentiable in its input, as
score matching needs.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from deq_plugin import DEQ, Activation, DenseCell, ResidualCell, normalize_all


def residual_branch(channels: int) -> nn.Sequential:
    """h(x) = conv3x3(softplus(conv3x3(x))), channels -> channels."""
    return nn.Sequential(
        nn.Conv2d(channels, channels, 3, padding=1),
        Activation("softplus"),
        nn.Conv2d(channels, channels, 3, padding=1),
    )


class ResBlock(nn.Module):
    """x + h(x) with h = `residual_branch`."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.branch = residual_branch(channels)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.branch(x)


class ConvScoreNet(nn.Module):
    """score(x) = end(core(begin(x))): conv3x3 3 -> C, a (B, C, H, W) core, conv3x3 C -> 3."""

    def __init__(self, channels: int, core: nn.Module, image_channels: int = 3) -> None:
        super().__init__()
        self.begin = nn.Conv2d(image_channels, channels, 3, padding=1)
        self.core = core
        self.end = nn.Conv2d(channels, image_channels, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.end(self.core(self.begin(x)))


def explicit_conv_core(channels: int, depth: int) -> nn.Sequential:
    """`depth` ResBlocks in a row."""
    if depth < 1:
        raise ValueError(f"depth must be >= 1, got {depth}")
    return nn.Sequential(*(ResBlock(channels) for _ in range(depth)))


def deq_conv_core(channels: int, norm: str, norm_lambda: float, **deq_options) -> DEQ:
    """The DEQ twin of a ResBlock stack: z* = h(z*) + u, h a normalised residual branch, u the input."""
    branch = normalize_all(residual_branch(channels), norm, norm_lambda)
    return DEQ(ResidualCell(branch), **deq_options)


class DenseDEQEnergy(nn.Module):
    """log p(x) = a·tanh(φ(x)) − ½‖x‖² with the DEQ feature net of a DEQ-DKEF kernel.

    φ(x) = out(z*), z* = σ(W z* + g(x)), by default g(x) = softplus(Linear(x)) (the paper's
    equation 5 with its single-layer injection), `out` a Linear hidden -> latent, a a readout.
    `cell` and `injection` replace the default DenseCell(hidden) and g.
    """

    def __init__(
        self,
        in_features: int,
        hidden: int,
        latent: int,
        cell: nn.Module | None = None,
        injection: nn.Module | None = None,
        **deq_options,
    ) -> None:
        super().__init__()
        if injection is None:
            injection = nn.Sequential(nn.Linear(in_features, hidden), Activation("softplus"))
        self.injection = injection
        self.deq = DEQ(cell if cell is not None else DenseCell(hidden), **deq_options)
        self.out = nn.Linear(hidden, latent)
        self.readout = nn.Parameter(torch.randn(latent) / latent**0.5)

    def features(self, x: Tensor) -> Tensor:
        """φ(x), shape (B, latent)."""
        return self.out(self.deq(self.injection(x)))

    def forward(self, x: Tensor) -> Tensor:
        return torch.tanh(self.features(x)) @ self.readout - 0.5 * x.pow(2).sum(-1)


class MLPEnergy(nn.Module):
    """log p(x) = MLP(x) − ½‖x‖², the MLP with `depth` softplus hidden layers of width `hidden`."""

    def __init__(self, in_features: int, hidden: int, depth: int) -> None:
        super().__init__()
        if depth < 1:
            raise ValueError(f"depth must be >= 1, got {depth}")
        layers: list[nn.Module] = []
        for i in range(depth):
            layers += [nn.Linear(in_features if i == 0 else hidden, hidden), Activation("softplus")]
        self.net = nn.Sequential(*layers, nn.Linear(hidden, 1))

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x).squeeze(-1) - 0.5 * x.pow(2).sum(-1)
