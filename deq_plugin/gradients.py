"""Gradient modes: how derivatives flow from a solved fixed point z* = f(z*, u) back to u and θ.

- `phantom`: K damped steps z <- (1 - τ) z + τ f(z, u) from the no-grad z*, with autograd.
- `implicit`: exact implicit differentiation to any order, in reverse and forward mode (a custom
  autograd Function; it has no vmap rule, so vmapped derivatives such as a batched Hessian trace
  need another mode or a loop).
- `unrolled`: autograd through every solver iteration (handled by `DEQ`, no code here).

Why the implicit mode looks the way it does (see shared/notes/higher-order-implicit-
differentiation.md): u and every cell parameter are explicit inputs of the Function and z* is its
*output*, saved with `save_for_backward`, so in a double backward the saved z* reconnects to the
graph through this same Function and the implicit second derivative recurses. The cell's partial
derivatives are taken with `torch.func.vjp` on a functional form of the cell. The adjoint
g = Jᵀg + grad is solved without a graph; when the caller asks for one, g is itself returned as an
implicit fixed point (of the adjoint cell), so a k-th order derivative keeps k graphs of one cell
step rather than a graph per adjoint iteration.
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
class FixedPointSpec:
    """A fixed point z* = fn(z*, *inputs) and how to solve the adjoint systems of its backward.

    `fn` is a pure function of tensors (the cell in functional form, or an adjoint of one);
    `report` receives every backward solve's result.
    """

    fn: Callable[..., Tensor]
    solver: str
    tol: float
    max_iter: int
    check_every: int
    report: Callable[[SolverResult], None]

    def adjoint(self) -> FixedPointSpec:
        """The spec of the adjoint fixed point w* = (∂fn/∂z)ᵀ w* + grad, a function of (w, grad, z, *inputs)."""

        def adjoint_fn(w: Tensor, grad: Tensor, z: Tensor, *inputs: Tensor) -> Tensor:
            _, vjp_z = torch.func.vjp(lambda z_: self.fn(z_, *inputs), z)
            return vjp_z(w)[0] + grad

        return FixedPointSpec(adjoint_fn, self.solver, self.tol, self.max_iter, self.check_every, self.report)

    def tangent(self) -> FixedPointSpec:
        """The spec of the tangent fixed point ż* = (∂fn/∂z) ż* + (∂fn/∂inputs) u̇, a function of
        (ż, z, *inputs, *input_tangents)."""

        def tangent_fn(z_dot: Tensor, z: Tensor, *inputs_and_tangents: Tensor) -> Tensor:
            n = len(inputs_and_tangents) // 2
            inputs, tangents = inputs_and_tangents[:n], inputs_and_tangents[n:]
            return torch.func.jvp(self.fn, (z, *inputs), (z_dot, *tangents))[1]

        return FixedPointSpec(tangent_fn, self.solver, self.tol, self.max_iter, self.check_every, self.report)


class FixedPoint(torch.autograd.Function):
    """Identity on a solved z* = fn(z*, *inputs), whose backward is exact implicit differentiation.

    The backward solves the adjoint w = (∂fn/∂z)ᵀ w + grad without a graph. When a graph is asked
    for (create_graph), w is returned through this same Function with the adjoint's own spec, so
    its derivatives are again implicit: every order costs one graph of fn (and of its vjps), never
    one per solver iteration. Forward mode (`jvp`, used by torch.func.jvp) is the mirror image: the
    tangent ż = (∂fn/∂z) ż + (∂fn/∂inputs) u̇ is solved without a graph and returned through this
    Function with the tangent's spec, so nested jvps and reverse mode over them stay implicit too.
    """

    @staticmethod
    def forward(spec: FixedPointSpec, z_star: Tensor, *inputs: Tensor) -> Tensor:
        return z_star.clone()

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:
        spec, _, *fn_inputs = inputs
        ctx.spec = spec
        ctx.save_for_backward(output, *fn_inputs)
        ctx.save_for_forward(output, *fn_inputs)

    @staticmethod
    def backward(ctx, grad: Tensor):
        z, *inputs = ctx.saved_tensors
        spec: FixedPointSpec = ctx.spec
        with torch.no_grad():
            _, vjp_z = torch.func.vjp(lambda z_: spec.fn(z_, *inputs), z)
            adjoint = SOLVERS.get(spec.solver)(
                lambda w: vjp_z(w)[0] + grad,
                grad,
                tol=spec.tol,
                max_iter=spec.max_iter,
                check_every=spec.check_every,
            )
        spec.report(adjoint)
        w = adjoint.z
        if torch.is_grad_enabled():
            w = FixedPoint.apply(spec.adjoint(), w, grad, z, *inputs)
        _, vjp_all = torch.func.vjp(spec.fn, z, *inputs)
        _, *grad_inputs = vjp_all(w)
        return (None, None, *grad_inputs)

    @staticmethod
    def jvp(ctx, _spec_tangent: None, _z_star_tangent: Tensor | None, *input_tangents: Tensor | None) -> Tensor:
        z, *inputs = ctx.saved_tensors
        spec: FixedPointSpec = ctx.spec.tangent()
        tangents = [torch.zeros_like(x) if t is None else t for x, t in zip(inputs, input_tangents)]
        with torch.no_grad():
            constants = [t.detach() for t in (z, *inputs, *tangents)]
            tangent = SOLVERS.get(spec.solver)(
                lambda z_dot: spec.fn(z_dot, *constants),
                torch.zeros_like(constants[0]),
                tol=spec.tol,
                max_iter=spec.max_iter,
                check_every=spec.check_every,
            )
        spec.report(tangent)
        return FixedPoint.apply(spec, tangent.z, z, *inputs, *tangents)


def implicit_fixed_point(
    cell: nn.Module,
    z_star: Tensor,
    u: Tensor,
    solver: str,
    tol: float,
    max_iter: int,
    check_every: int,
    report: Callable[[SolverResult], None],
    context: tuple = (),
) -> Tensor:
    """z* = cell(z*, u, *context) returned with an exact implicit backward of any order.

    u and the cell's parameters are the differentiable inputs; `context` and the buffers are
    constants. The adjoint systems are solved with `solver` to `tol`.
    """
    names = [name for name, _ in cell.named_parameters()]
    params = [p for _, p in cell.named_parameters()]
    buffers = dict(cell.named_buffers())

    def cell_fn(z_: Tensor, u_: Tensor, *params_: Tensor) -> Tensor:
        state = dict(zip(names, params_))
        state.update(buffers)
        return functional_call(cell, state, (z_, u_, *context))

    spec = FixedPointSpec(cell_fn, solver, tol, max_iter, check_every, report)
    return FixedPoint.apply(spec, z_star.detach(), u, *params)
