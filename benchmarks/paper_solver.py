"""The paper's stopping rule as a solver: Picard iteration until ||z_{k+1} − z_k|| < tol over the batch.

The paper (appendix F, table 10) stops on the absolute L2 distance between consecutive iterates
of the whole batch (tolerance 1e-5 or 5e-6, at most 128 iterations), where `deq_plugin` stops on
the per-sample relative residual. Registered in `deq_plugin.SOLVERS` as "picard-abs-batch" when
this module is imported, so `DEQ(cell, solver=PAPER_SOLVER, tol=1e-5)` runs it.
"""
from __future__ import annotations

import math

from torch import Tensor

from deq_plugin import SOLVERS, NonFiniteStateError, SolverResult, register_solver
from deq_plugin.solvers import FixedPointMap, residuals

PAPER_SOLVER = "picard-abs-batch"


def picard_abs_batch(f: FixedPointMap, z0: Tensor, *, tol: float, max_iter: int, check_every: int = 1) -> SolverResult:
    """z <- f(z) until the whole-batch step norm ||f(z) − z|| < tol (absolute), tested every check_every."""
    if not tol > 0 or max_iter < 1 or check_every < 1:
        raise ValueError(f"need tol > 0, max_iter >= 1, check_every >= 1; got {tol}, {max_iter}, {check_every}")
    z = z0
    for k in range(1, max_iter + 1):
        fz = f(z)
        if k % check_every == 0 or k == max_iter:
            step = (fz - z).norm().item()
            if not math.isfinite(step):
                raise NonFiniteStateError(f"fixed-point state became non-finite (step norm {step})")
            if step < tol:
                return SolverResult(fz, k, *residuals(fz, z), True)
        z_prev, z = z, fz
    return SolverResult(z, max_iter, *residuals(z, z_prev), False)


if PAPER_SOLVER not in SOLVERS.names():
    register_solver(PAPER_SOLVER)(picard_abs_batch)
