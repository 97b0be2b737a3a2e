"""The `DEQ` module: the equilibrium z* = f(z*, u) of a cell f, differentiable to any order."""
from __future__ import annotations

import logging
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Iterator

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize

from deq_plugin.gradients import implicit_fixed_point, phantom_steps
from deq_plugin.norms import refresh_spectral_norms
from deq_plugin.solvers import SOLVERS, NonFiniteStateError, SolverResult

GRAD_MODES = ("phantom", "implicit", "unrolled")
COMPILED_CHECK_EVERY = 8
logger = logging.getLogger("deq_plugin")


@dataclass
class DEQStats:
    """Solver statistics of one forward (and, in implicit mode, of the latest backward).

    `n_iter` counts cell evaluations of the solve (Anderson spends one extra on its first step);
    residuals are the worst over the batch.
    """

    n_iter: int
    abs_residual: float
    rel_residual: float
    converged: bool
    backward_n_iter: int | None = None
    backward_rel_residual: float | None = None
    backward_converged: bool | None = None


class DEQ(nn.Module):
    """Deep equilibrium layer: forward(u, z0=None) returns z* with z* = cell(z*, u) and u's shape.

    `forward(u, z0, context=(c1, ...))` passes constant extra inputs to the cell, cell(z, u, *context)
    (e.g. NCSN noise-level labels); in implicit mode they may not require grad.

    Derivatives flow whenever autograd is enabled, in train and eval mode alike:
    - grad="phantom": solve without autograd, then `phantom_steps` steps
      z <- (1 - τ) z + τ cell(z, u) with autograd (the paper's K=2, τ=1);
    - grad="implicit": exact implicit differentiation to any order; the adjoint system is solved
      iteratively with `backward_solver` to `backward_tol` (defaults: picard, `tol`);
    - grad="unrolled": autograd through every solver iteration (the memory-hungry reference).
    The solver stops on the per-sample relative residual ||f(z) - z|| / ||f(z)|| <= tol, testing
    every `check_every` iterations (default: every iteration on CPU, every 4th on accelerators,
    to avoid a host sync per step, every `COMPILED_CHECK_EVERY`th under torch.compile, where each
    check is a graph break). With `warm_start`, the previous z* starts the next solve when
    its shape matches; that state follows `.to()`, is not in `state_dict`, and `reset_warm_start()`
    clears it.
    """

    def __init__(
        self,
        cell: nn.Module,
        *,
        solver: str = "picard",
        tol: float = 1e-4,
        max_iter: int = 128,
        grad: str = "phantom",
        phantom_steps: int = 2,
        phantom_tau: float = 1.0,
        warm_start: bool = False,
        check_every: int | None = None,
        solver_options: dict[str, Any] | None = None,
        backward_solver: str = "picard",
        backward_tol: float | None = None,
        backward_max_iter: int | None = None,
        name: str | None = None,
        warn_interval_s: float = 60.0,
    ) -> None:
        super().__init__()
        SOLVERS.get(solver)
        SOLVERS.get(backward_solver)
        if grad not in GRAD_MODES:
            raise ValueError(f"unknown grad mode {grad!r}; valid: {list(GRAD_MODES)}")
        if not tol > 0:
            raise ValueError(f"tol must be > 0, got {tol}")
        if max_iter < 1:
            raise ValueError(f"max_iter must be >= 1, got {max_iter}")
        if grad == "phantom" and phantom_steps < 1:
            raise ValueError(f"phantom_steps must be >= 1, got {phantom_steps}")
        if not 0 < phantom_tau <= 1:
            raise ValueError(f"phantom_tau must be in (0, 1], got {phantom_tau}")
        if check_every is not None and check_every < 1:
            raise ValueError(f"check_every must be >= 1, got {check_every}")
        self.cell = cell
        self.solver, self.tol, self.max_iter = solver, tol, max_iter
        self.grad, self.phantom_steps, self.phantom_tau = grad, phantom_steps, phantom_tau
        self.warm_start, self.check_every = warm_start, check_every
        self.solver_options = dict(solver_options or {})
        self.backward_solver = backward_solver
        self.backward_tol = tol if backward_tol is None else backward_tol
        self.backward_max_iter = max_iter if backward_max_iter is None else backward_max_iter
        self.name = name or type(cell).__name__
        self.warn_interval_s = warn_interval_s
        self.stats: DEQStats | None = None
        self._warm_z: Tensor | None = None
        # Non-converged solves since construction, per direction ("forward", "backward"); warnings
        # are rate-limited per direction, so a frequent forward one never hides a backward one.
        self.unconverged_solves = {"forward": 0, "backward": 0}
        self._last_warning = {"forward": float("-inf"), "backward": float("-inf")}
        self._suppressed_warnings = {"forward": 0, "backward": 0}

    def extra_repr(self) -> str:
        return (
            f"name={self.name!r}, solver={self.solver!r}, tol={self.tol}, max_iter={self.max_iter}, "
            f"grad={self.grad!r}, phantom_steps={self.phantom_steps}, warm_start={self.warm_start}"
        )

    def reset_warm_start(self) -> None:
        """Forgets the stored fixed point; the next solve starts cold."""
        self._warm_z = None

    def _apply(self, fn, recurse: bool = True):
        module = super()._apply(fn, recurse)
        if self._warm_z is not None:
            self._warm_z = fn(self._warm_z)
        return module

    def _initial_state(self, u: Tensor, z0: Tensor | None) -> Tensor:
        if z0 is not None:
            if z0.shape != u.shape:
                raise ValueError(f"DEQ {self.name!r}: z0 has shape {tuple(z0.shape)}, expected u's {tuple(u.shape)}")
            return z0.detach()
        warm = self._warm_z
        if self.warm_start and warm is not None and warm.shape == u.shape and warm.dtype == u.dtype and warm.device == u.device:
            return warm
        return torch.zeros_like(u)

    def _check_every(self, u: Tensor) -> int:
        if self.check_every is not None:
            return self.check_every
        if torch.compiler.is_compiling():
            return COMPILED_CHECK_EVERY  # each convergence check is a graph break
        return 1 if u.device.type == "cpu" else 4

    def _cell_step(self, z: Tensor, u: Tensor, context: tuple) -> Tensor:
        out = self.cell(z, u, *context)
        if out.shape != z.shape:
            raise ValueError(f"DEQ {self.name!r}: the cell returned shape {tuple(out.shape)} for a state of shape {tuple(z.shape)}")
        return out

    def _solve(self, u: Tensor, z0: Tensor, check_every: int, context: tuple) -> SolverResult:
        solve = SOLVERS.get(self.solver)
        try:
            return solve(
                lambda z: self._cell_step(z, u, context),
                z0,
                tol=self.tol,
                max_iter=self.max_iter,
                check_every=check_every,
                **self.solver_options,
            )
        except NonFiniteStateError as error:
            raise NonFiniteStateError(f"DEQ layer {self.name!r}: {error}") from None

    def _unconverged(self, direction: str, result: SolverResult, tol: float) -> None:
        """Counts a non-converged solve of `direction` ("forward" or "backward") and warns, at most
        once per warn_interval_s per direction."""
        self.unconverged_solves[direction] += 1
        now = time.monotonic()
        if now - self._last_warning[direction] < self.warn_interval_s:
            self._suppressed_warnings[direction] += 1
            return
        suppressed = self._suppressed_warnings[direction]
        what = "forward solve" if direction == "forward" else "adjoint (backward) solve"
        logger.warning(
            "DEQ layer %r: %s did not converge in %d iterations (relative residual %.3g > tol %.3g)%s%s",
            self.name, what, result.n_iter, result.rel_residual.max().item(), tol,
            "; the gradients it gives are approximate" if direction == "backward" else "",
            f"; {suppressed} similar {direction} warnings suppressed" if suppressed else "",
        )
        self._last_warning[direction], self._suppressed_warnings[direction] = now, 0

    def _report_backward(self, result: SolverResult) -> None:
        if self.stats is not None:
            self.stats.backward_n_iter = result.n_iter
            self.stats.backward_rel_residual = result.rel_residual.max().item()
            self.stats.backward_converged = result.converged
        if not result.converged:
            self._unconverged("backward", result, self.backward_tol)

    def forward(self, u: Tensor, z0: Tensor | None = None, context: tuple = ()) -> Tensor:
        if not isinstance(u, Tensor) or u.dim() < 2:
            raise ValueError(f"DEQ {self.name!r}: u must be a batched tensor (B, ...), got {getattr(u, 'shape', type(u))}")
        if self.grad == "implicit" and any(isinstance(c, Tensor) and c.requires_grad for c in context):
            raise ValueError(
                f"DEQ {self.name!r}: context tensors are constants of the implicit backward and may not "
                "require grad; pass differentiable inputs through u"
            )
        z_init = self._initial_state(u, z0)
        check_every = self._check_every(u)
        refresh_spectral_norms(self.cell, u.shape, update=self.training)
        track = torch.is_grad_enabled()
        if track and self.grad == "unrolled":
            with parametrize.cached():  # normalised weights computed once per solve, not per step
                result = self._solve(u, z_init, check_every, context)
            z = result.z
        else:
            # When a gradient mode follows, forward-mode tangents (torch.func.jvp) must come from it,
            # as reverse-mode gradients do, so the solve sees a detached u; otherwise they follow the
            # solver's iterations.
            with torch.no_grad(), parametrize.cached():
                result = self._solve(u.detach() if track else u, z_init, check_every, context)
            z = result.z
            if track and self.grad == "phantom":
                z = phantom_steps(lambda z_, u_: self.cell(z_, u_, *context), z, u, self.phantom_steps, self.phantom_tau)
            elif track and self.grad == "implicit":
                z = implicit_fixed_point(
                    self.cell, z, u, self.backward_solver, self.backward_tol, self.backward_max_iter,
                    check_every, self._report_backward, context, name=self.name,
                )
        self.stats = DEQStats(
            n_iter=result.n_iter,
            abs_residual=result.abs_residual.max().item(),
            rel_residual=result.rel_residual.max().item(),
            converged=result.converged,
        )
        if not result.converged:
            self._unconverged("forward", result, self.tol)
        if self.warm_start:
            self._warm_z = result.z.detach()
        return z


@contextmanager
def exact_derivatives(module: nn.Module, tol: float) -> Iterator[None]:
    """Within the block, every DEQ layer in `module` differentiates its true fixed point.

    Each layer switches to grad="unrolled" (autograd through a solve to `tol`; every derivative of
    it is exact to `tol`, in any mode) and back on exit. Use it to score a model trained with
    phantom gradients by the derivatives of the function it actually computes, e.g. for validation.
    """
    if not tol > 0:
        raise ValueError(f"tol must be > 0, got {tol}")
    deqs = [m for m in module.modules() if isinstance(m, DEQ)]
    saved = [(deq.grad, deq.tol) for deq in deqs]
    try:
        for deq in deqs:
            deq.grad, deq.tol = "unrolled", tol
        yield
    finally:
        for deq, (grad, previous_tol) in zip(deqs, saved):
            deq.grad, deq.tol = grad, previous_tol
