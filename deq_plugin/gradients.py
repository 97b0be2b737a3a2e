"""Gradient modes: how derivatives flow from a solved fixed point z* = f(z*, u) back to u and θ.

- `phantom`: K damped steps z <- (1 - τ) z + τ f(z, u) from the no-grad z*, with autograd.
- `implicit`: exact implicit differentiation to any order (a custom autograd Function).
- `unrolled`: autograd through every solver iteration (handled by `DEQ`, no code here).

Why the implicit mode looks the way it does (see shared/notes/higher-order-implicit-
differentiation.md): u and every cell parameter are explicit inputs of the Function and z* is its
*output*, saved with `save_for_backward`, so in a double backward the saved z* reconnects to the
graph through this same Function and the implicit second derivative recurses. The cell's partial
derivatives are taken with `torch.func.vjp` on a functional form of the cell, and the adjoint
iteration g <- Jᵀg + grad is built with autograd exactly when the caller asked for a graph.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor, nn
from torch.func import functional_call

from deq_plugin.solvers import SOLVERS, SolverResult

Cell = Callable[[Tensor, Tensor], Tensor]


def phantom_steps(cell: Cell, z_star: Tensor, u: Tensor, steps: int, tau: float) -> Tensor:
    """K steps of z <- (1 - tau) z + tau f(z, u) from z*, recorded by autograd (Proposition 2)."""
    z = z_star
    for _ in range(steps):
        z = cell(z, u) if tau == 1.0 else (1 - tau) * z + tau * cell(z, u)
    return z


@dataclass
class AdjointSpec:
    """What the implicit backward needs besides tensors: the cell and how to solve the adjoint."""

    cell: nn.Module
    param_names: list[str]
    buffers: dict[str, Tensor]
    solver: str
    tol: float
    max_iter: int
    check_every: int
    report: Callable[[SolverResult], None]
    context: tuple


class ImplicitFixedPoint(torch.autograd.Function):
    """Identity on a solved z*, whose backward solves the adjoint (I - Jᵀ) g = grad exactly."""

    @staticmethod
    def forward(spec: AdjointSpec, z_star: Tensor, u: Tensor, *params: Tensor) -> Tensor:
        return z_star.clone()

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:
        spec, _, u, *params = inputs
        ctx.spec = spec
        ctx.save_for_backward(output, u, *params)

    @staticmethod
    def backward(ctx, grad_z: Tensor):
        z, u, *params = ctx.saved_tensors
        spec: AdjointSpec = ctx.spec

        def cell_fn(z_: Tensor, u_: Tensor, *params_: Tensor) -> Tensor:
            state = dict(zip(spec.param_names, params_))
            state.update(spec.buffers)
            return functional_call(spec.cell, state, (z_, u_, *spec.context))

        _, vjp_fn = torch.func.vjp(cell_fn, z, u, *params)
        solve = SOLVERS.get(spec.solver)
        adjoint = solve(
            lambda g: vjp_fn(g)[0] + grad_z,
            grad_z,
            tol=spec.tol,
            max_iter=spec.max_iter,
            check_every=spec.check_every,
        )
        spec.report(adjoint)
        _, grad_u, *grad_params = vjp_fn(adjoint.z)
        return (None, None, grad_u, *grad_params)


def implicit_fixed_point(cell: nn.Module, z_star: Tensor, u: Tensor, spec: AdjointSpec) -> Tensor:
    """z* returned with an exact implicit-differentiation backward of any order."""
    params = [p for _, p in cell.named_parameters()]
    return ImplicitFixedPoint.apply(spec, z_star.detach(), u, *params)


def adjoint_spec(
    cell: nn.Module,
    solver: str,
    tol: float,
    max_iter: int,
    check_every: int,
    report: Callable[[SolverResult], None],
    context: tuple = (),
) -> AdjointSpec:
    """Captures the cell's parameter names and buffers for the functional backward."""
    return AdjointSpec(
        cell=cell,
        param_names=[name for name, _ in cell.named_parameters()],
        buffers=dict(cell.named_buffers()),
        solver=solver,
        tol=tol,
        max_iter=max_iter,
        check_every=check_every,
        report=report,
        context=context,
    )
