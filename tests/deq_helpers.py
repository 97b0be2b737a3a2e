"""Small models shared by the DEQ tests: an energy with a DEQ core and its unrolled twin."""
from __future__ import annotations

import torch
from torch import Tensor, nn

from deq_plugin import DEQ, DenseCell


class DEQEnergy(nn.Module):
    """log p(x) = a·tanh(z*(x)) - ½||x||², z* = softplus(W z* + U x + b), W Frobenius-normalised."""

    def __init__(self, dim: int, hidden: int, norm_lambda: float = 2.0, **deq_options) -> None:
        super().__init__()
        self.injection = nn.Linear(dim, hidden)
        self.deq = DEQ(DenseCell(hidden, norm_lambda=norm_lambda), **deq_options)
        self.readout = nn.Parameter(torch.randn(hidden) / hidden**0.5)

    def features(self, x: Tensor) -> Tensor:
        return self.deq(self.injection(x))

    def forward(self, x: Tensor) -> Tensor:
        return torch.tanh(self.features(x)) @ self.readout - 0.5 * x.pow(2).sum(1)


def unrolled_log_density(model: DEQEnergy, x: Tensor, steps: int = 300) -> Tensor:
    """The same energy with z* from `steps` plain Picard steps under full autograd (the reference)."""
    u = model.injection(x)
    z = torch.zeros_like(u)
    for _ in range(steps):
        z = model.deq.cell(z, u)
    return torch.tanh(z) @ model.readout - 0.5 * x.pow(2).sum(1)


def relative_error(a: Tensor, b: Tensor) -> float:
    """||a - b|| / ||b||."""
    return ((a - b).norm() / b.norm()).item()
