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


def nested_jvp_and_grads(cell: nn.Module, u: Tensor, tangent: Tensor, grad: str) -> tuple[Tensor, tuple[Tensor, ...]]:
    """The second directional derivative of z*(u) along `tangent` by nested jvp, through a DEQ of
    `cell` in gradient mode `grad`, and the parameter gradient of a loss built from it (third order:
    reverse over forward over forward, as DKEF's α fit is trained)."""
    from torch.func import jvp

    deq = DEQ(cell, tol=1e-13, max_iter=300, grad=grad)
    first = lambda v: jvp(deq, (v,), (tangent,))[1]  # noqa: E731
    first_value, second = jvp(first, (u,), (tangent,))
    loss = second.pow(2).sum() + first_value.sum()
    return second.detach(), torch.autograd.grad(loss, list(cell.parameters()))


def hessian_trace_and_grads(
    cell: nn.Module, readout: Tensor, x: Tensor, grad: str, trace_fn
) -> tuple[Tensor, tuple[Tensor, ...]]:
    """tr ∇²_x log p(x) for log p = tanh(z*(x)) · readout, z* from a DEQ of `cell` in gradient mode
    `grad`, computed by `trace_fn(score, x)`, and the parameter gradient of the summed squared trace."""
    x = x.detach().requires_grad_(True)
    deq = DEQ(cell, tol=1e-13, max_iter=300, grad=grad)
    (score,) = torch.autograd.grad((torch.tanh(deq(x)) @ readout).sum(), x, create_graph=True)
    trace = trace_fn(score, x)
    return trace.detach(), torch.autograd.grad(trace.pow(2).sum(), list(cell.parameters()))


def relative_error(a: Tensor, b: Tensor) -> float:
    """||a - b|| / ||b||."""
    return ((a - b).norm() / b.norm()).item()
