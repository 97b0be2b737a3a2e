"""Gradient modes: how derivatives flow from a solved fixed point z* = f(z*, u) back to u and θ.

- `phantom`: K damped steps z <- (1 - τ) z + τ f(z, u) from the no-grad z*, with autograd.
- `implicit`: exact implicit differentiation to any order, in reverse and forward mode, also under
  torch.func.vmap of the derivatives (a batched Hessian trace); a custom autograd Function.
- `unrolled`: autograd through every solver iteration (handled by `DEQ`, no code here).

Why the implicit mode looks the way it does: u and every cell parameter are explicit inputs of the Function and z* is its
*output*, saved with `save_for_backward`, so in a double backward the saved z* reconnects to the
graph through this same Function and the implicit second derivative recurses. The cell's partial
derivatives are taken with `torch.func.vjp` on a functional form of the cell. The adjoint
g = Jᵀg + grad (and, in forward mode, the tangent) is itself a fixed point solved, without a graph,
inside the same Function, so a k-th order derivative keeps k graphs of one cell step rather than a
graph per solver iteration, and under vmap the Function's vmap rule solves the vmapped system once.
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Callable, Iterator

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
    """A fixed point z* = fn(z*, *inputs), and how to solve it and the fixed points of its derivatives.

    `fn` is a pure function of tensors (the cell in functional form, or an adjoint or tangent of
    one). With `solve` the Function solves from the given start; without it the start is already
    z* (the DEQ solved it). `make_map(*inputs)`, when given, returns the map z -> fn(z, *inputs)
    with the work that does not depend on z done once (the adjoint's vjp). `report` receives every
    solve's result; `name` (the DEQ layer's) starts every error raised while solving or differentiating.
    """

    fn: Callable[..., Tensor]
    solver: str
    tol: float
    max_iter: int
    check_every: int
    report: Callable[[SolverResult], None]
    solve: bool = False
    make_map: Callable[..., Callable[[Tensor], Tensor]] | None = None
    name: str = "DEQ"

    def solver_map(self, *inputs: Tensor) -> Callable[[Tensor], Tensor]:
        """z -> fn(z, *inputs), as the solver iterates it."""
        if self.make_map is not None:
            return self.make_map(*inputs)
        return lambda z: self.fn(z, *inputs)

    def derived(self, fn: Callable[..., Tensor], make_map: Callable | None = None) -> FixedPointSpec:
        """A fixed point solved inside the Function, with this spec's solver settings."""
        return replace(self, fn=fn, solve=True, make_map=make_map)

    def adjoint(self) -> FixedPointSpec:
        """The spec of the adjoint fixed point w* = (∂fn/∂z)ᵀ w* + grad, a function of (w, grad, z, *inputs)."""

        def adjoint_fn(w: Tensor, grad: Tensor, z: Tensor, *inputs: Tensor) -> Tensor:
            _, vjp_z = torch.func.vjp(lambda z_: self.fn(z_, *inputs), z)
            return vjp_z(w)[0] + grad

        def adjoint_map(grad: Tensor, z: Tensor, *inputs: Tensor) -> Callable[[Tensor], Tensor]:
            _, vjp_z = torch.func.vjp(lambda z_: self.fn(z_, *inputs), z)
            return lambda w: vjp_z(w)[0] + grad

        return self.derived(adjoint_fn, adjoint_map)

    def tangent(self) -> FixedPointSpec:
        """The spec of the tangent fixed point ż* = (∂fn/∂z) ż* + (∂fn/∂inputs) u̇, a function of
        (ż, z, *inputs, *input_tangents)."""

        def tangent_fn(z_dot: Tensor, z: Tensor, *inputs_and_tangents: Tensor) -> Tensor:
            n = len(inputs_and_tangents) // 2
            inputs, tangents = inputs_and_tangents[:n], inputs_and_tangents[n:]
            return torch.func.jvp(self.fn, (z, *inputs), (z_dot, *tangents))[1]

        return self.derived(tangent_fn)

    def batched(self, in_dims: tuple[int | None, ...]) -> FixedPointSpec:
        """This fixed point vmapped: fn over inputs whose batch dimension (if any) is 0."""
        return replace(self, fn=torch.func.vmap(self.fn, in_dims=in_dims), make_map=None)


_NAMED_ERRORS = (RuntimeError, ValueError, FloatingPointError)


@contextmanager
def _naming_the_layer(spec: FixedPointSpec, what: str) -> Iterator[None]:
    """Re-raises an error of `what` with the layer's name in front, unless an inner solve already named it."""
    prefix = f"DEQ layer {spec.name!r}"
    try:
        yield
    except _NAMED_ERRORS as error:
        if str(error).startswith(prefix):
            raise
        message = f"{prefix}: {what}: {error}"
        try:
            named = type(error)(message)
        except TypeError:  # an exception class that takes other arguments than a message
            named = RuntimeError(message)
        raise named from error


class FixedPoint(torch.autograd.Function):
    """z* = fn(z*, *inputs), returned with exact implicit derivatives in reverse and forward mode.

    The forward returns the given z* (`spec.solve` off: the DEQ solved it) or solves from the given
    start. The backward solves the adjoint w = (∂fn/∂z)ᵀ w + grad, and `jvp` the tangent
    ż = (∂fn/∂z) ż + (∂fn/∂inputs) u̇, each through this same Function with the adjoint's or the
    tangent's spec. So their own derivatives are again implicit: every order costs one graph of fn
    (and of its vjps or jvps), never one per solver iteration. Under vmap (e.g. a Hessian trace's
    batched backward) a solve runs once on the vmapped fixed point.
    """

    @staticmethod
    def forward(spec: FixedPointSpec, z_start: Tensor, *inputs: Tensor) -> Tensor:
        if not spec.solve:
            return z_start.clone()
        with torch.no_grad(), _naming_the_layer(spec, "implicit derivative (adjoint or tangent) solve"):
            result = SOLVERS.get(spec.solver)(
                spec.solver_map(*inputs), z_start, tol=spec.tol, max_iter=spec.max_iter, check_every=spec.check_every,
            )
        spec.report(result)
        return result.z

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
        with _naming_the_layer(spec, "implicit backward"):
            w = FixedPoint.apply(spec.adjoint(), grad, grad, z, *inputs)
            _, vjp_all = torch.func.vjp(spec.fn, z, *inputs)
            _, *grad_inputs = vjp_all(w)
        return (None, None, *grad_inputs)

    @staticmethod
    def jvp(ctx, _spec_tangent: None, _z_start_tangent: Tensor | None, *input_tangents: Tensor | None) -> Tensor:
        z, *inputs = ctx.saved_tensors
        tangents = [torch.zeros_like(x) if t is None else t for x, t in zip(inputs, input_tangents)]
        with _naming_the_layer(ctx.spec, "implicit forward-mode derivative"):
            return FixedPoint.apply(ctx.spec.tangent(), torch.zeros_like(z), z, *inputs, *tangents)

    @staticmethod
    def vmap(info, in_dims: tuple, spec: FixedPointSpec, z_start: Tensor, *inputs: Tensor) -> tuple[Tensor, int]:
        _, z_dim, *input_dims = in_dims
        if z_dim is None:
            z_start = z_start.expand(info.batch_size, *z_start.shape)
        else:
            z_start = z_start.movedim(z_dim, 0)
        inputs = [x if d is None else x.movedim(d, 0) for x, d in zip(inputs, input_dims)]
        fn_dims = (0, *(None if d is None else 0 for d in input_dims))
        return FixedPoint.apply(spec.batched(fn_dims), z_start, *inputs), 0


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
    name: str = "DEQ",
) -> Tensor:
    """z* = cell(z*, u, *context) returned with an exact implicit backward of any order.

    u and the cell's parameters are the differentiable inputs; `context` and the buffers are
    constants. The adjoint systems are solved with `solver` to `tol`; errors start with `name`.
    """
    names = [name for name, _ in cell.named_parameters()]
    params = [p for _, p in cell.named_parameters()]
    buffers = dict(cell.named_buffers())

    def cell_fn(z_: Tensor, u_: Tensor, *params_: Tensor) -> Tensor:
        state = dict(zip(names, params_))
        state.update(buffers)
        return functional_call(cell, state, (z_, u_, *context))

    spec = FixedPointSpec(cell_fn, solver, tol, max_iter, check_every, report, name=name)
    return FixedPoint.apply(spec, z_star.detach(), u, *params)
