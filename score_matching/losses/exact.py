"""Exact score matching (Hyvärinen, 2005; the paper's equation 1) and the Fisher divergence."""
from __future__ import annotations

import torch
from torch import Tensor

from score_matching.losses.common import ScoreFn, check_batch, per_sample_sum, requires_grad_input
from score_matching.losses.hessian_trace import TRACE_METHODS, hessian_trace


def exact_score_matching(
    score_fn: ScoreFn, x: Tensor, trace: str = "batched", chunk_size: int | None = None
) -> Tensor:
    """mean_b [½‖s(x_b)‖² + tr ∂s/∂x(x_b)], a scalar (the paper's equation 1).

    trace picks how the Jacobian trace is computed (one of TRACE_METHODS, see
    `score_matching.losses.hessian_trace`): "batched" (vmapped backward passes, in blocks of
    chunk_size dimensions), "forward" (vmapped forward-mode; needs a torch.func-transformable
    score) or "loop" (one backward pass per dimension, for scores that cannot run under vmap).
    The graph is kept, so backward() gives exact parameter gradients (third-order derivatives
    of the log-density when s = ∇ log p).
    """
    check_batch(x)
    if trace not in TRACE_METHODS:
        raise ValueError(f"unknown trace {trace!r}; valid: {list(TRACE_METHODS)}")
    x = requires_grad_input(x)
    with torch.enable_grad():
        s = score_fn(x)
        jacobian_trace = hessian_trace(score_fn if trace == "forward" else s, x, trace, chunk_size)
    return (0.5 * per_sample_sum(s**2) + jacobian_trace).mean()


def fisher_divergence(score_fn: ScoreFn, x: Tensor, true_score_fn: ScoreFn) -> Tensor:
    """½ mean_b ‖s(x_b) − s_true(x_b)‖², a scalar (with a graph through score_fn)."""
    check_batch(x)
    x = requires_grad_input(x)
    with torch.enable_grad():
        difference = score_fn(x) - true_score_fn(x)
    return 0.5 * per_sample_sum(difference**2).mean()
