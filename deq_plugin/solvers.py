"""Batched fixed-point solvers z = f(z).

Every solver stops on the per-sample relative residual ||f(z) - z|| / ||f(z)|| <= tol (all samples),
tested every `check_every` iterations so that a GPU is not synchronised on each step. Solvers are
written with out-of-place tensor ops only, so the same code can be differentiated through (the
"unrolled" gradient mode) or run under `torch.no_grad()`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor

from deq_plugin.registry import Table

SOLVERS: Table = Table("solver")
register_solver = SOLVERS.register

FixedPointMap = Callable[[Tensor], Tensor]


class NonFiniteStateError(FloatingPointError):
    """Raised when a solver meets NaN or Inf in the state or the residual."""


@dataclass
class SolverResult:
    """What a solver returns: the last iterate and how far it is from a fixed point."""

    z: Tensor
    n_iter: int
    abs_residual: Tensor  # per sample, ||f(z) - z||
    rel_residual: Tensor  # per sample, ||f(z) - z|| / ||f(z)||
    converged: bool


def per_sample_norm(t: Tensor) -> Tensor:
    """Euclidean norm of each sample (batch first)."""
    return t.flatten(1).norm(dim=1)


def residuals(fz: Tensor, z: Tensor) -> tuple[Tensor, Tensor]:
    """Per-sample absolute and relative residuals of the step z -> fz."""
    abs_res = per_sample_norm(fz - z)
    rel_res = abs_res / per_sample_norm(fz).clamp_min(torch.finfo(fz.dtype).tiny)
    return abs_res, rel_res


def _converged(rel_res: Tensor, tol: float) -> bool:
    """One host sync: the worst relative residual against tol; non-finite values raise."""
    worst = rel_res.max().item()
    if not math.isfinite(worst):
        raise NonFiniteStateError(f"fixed-point state became non-finite (residual {worst})")
    return worst <= tol


def _check_args(tol: float, max_iter: int, check_every: int) -> None:
    if not tol > 0:
        raise ValueError(f"tol must be > 0, got {tol}")
    if max_iter < 1:
        raise ValueError(f"max_iter must be >= 1, got {max_iter}")
    if check_every < 1:
        raise ValueError(f"check_every must be >= 1, got {check_every}")


@register_solver("picard")
def picard(f: FixedPointMap, z0: Tensor, *, tol: float, max_iter: int, check_every: int = 1) -> SolverResult:
    """Plain fixed-point (Picard) iteration z <- f(z); one cell evaluation per iteration."""
    _check_args(tol, max_iter, check_every)
    z = z0
    for k in range(1, max_iter + 1):
        fz = f(z)
        if k % check_every == 0 or k == max_iter:
            abs_res, rel_res = residuals(fz, z)
            if _converged(rel_res, tol):
                return SolverResult(fz, k, abs_res, rel_res, True)
        z = fz
    return SolverResult(z, max_iter, abs_res, rel_res, False)


@register_solver("anderson")
def anderson(
    f: FixedPointMap,
    z0: Tensor,
    *,
    tol: float,
    max_iter: int,
    check_every: int = 1,
    history: int = 5,
    regularization: float = 1e-4,
    mixing: float = 1.0,
) -> SolverResult:
    """Batched Anderson acceleration (type II) with `history` past iterates.

    Each step solves min_a ||sum_i a_i g_i||^2 subject to sum_i a_i = 1 per sample, where g_i =
    f(x_i) - x_i, regularised by `regularization` times the mean diagonal of the Gram matrix (so
    the regularisation is scale-free), and mixes x <- mixing * sum a_i f(x_i) + (1 - mixing) *
    sum a_i x_i. One cell evaluation per iteration.
    """
    _check_args(tol, max_iter, check_every)
    if history < 1:
        raise ValueError(f"history must be >= 1, got {history}")
    if not regularization >= 0:
        raise ValueError(f"regularization must be >= 0, got {regularization}")
    if not 0 < mixing <= 1:
        raise ValueError(f"mixing must be in (0, 1], got {mixing}")
    shape = z0.shape
    xs: list[Tensor] = [z0.flatten(1)]
    fs: list[Tensor] = [f(z0).flatten(1)]
    x_next = fs[0]
    for k in range(1, max_iter + 1):
        if k > 1:
            x_stack, f_stack = torch.stack(xs, 1), torch.stack(fs, 1)  # (B, n, D)
            g = f_stack - x_stack
            gram = g @ g.transpose(1, 2)
            n = gram.shape[-1]
            scale = gram.diagonal(dim1=1, dim2=2).mean(1).clamp_min(torch.finfo(gram.dtype).tiny)
            eye = torch.eye(n, dtype=gram.dtype, device=gram.device)
            gram = gram + regularization * scale[:, None, None] * eye
            ones = torch.ones(gram.shape[0], n, 1, dtype=gram.dtype, device=gram.device)
            weights = torch.linalg.solve(gram, ones)
            weights = weights / weights.sum(1, keepdim=True)  # (B, n, 1)
            x_next = mixing * (weights.transpose(1, 2) @ f_stack).squeeze(1)
            if mixing < 1:
                x_next = x_next + (1 - mixing) * (weights.transpose(1, 2) @ x_stack).squeeze(1)
        f_next = f(x_next.view(shape)).flatten(1)
        xs, fs = (xs + [x_next])[-history:], (fs + [f_next])[-history:]
        if k % check_every == 0 or k == max_iter:
            abs_res, rel_res = residuals(f_next, x_next)
            if _converged(rel_res, tol):
                return SolverResult(f_next.view(shape), k + 1, abs_res, rel_res, True)
    return SolverResult(x_next.view(shape), max_iter + 1, abs_res, rel_res, False)
