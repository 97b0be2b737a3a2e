"""Per-sample trace of the score's Jacobian, tr(∂s/∂x) = tr ∇²_x log p(x) when s = ∇_x log p.

Three ways, all exact and differentiable with respect to the model parameters:
- "batched": one vmapped backward pass over blocks of one-hot cotangents (`torch.func.vmap` of
  `torch.autograd.grad`); works for any score whose backward can be vmapped, including scores
  built with `torch.autograd.grad` and implicit DEQ layers.
- "forward": vmapped forward-mode products (`torch.func.vmap` of `torch.func.jvp`); needs a score
  function that torch.func can transform (e.g. a plain network, or
  `score_from_log_density(f, functional=True)`).
- "loop": one backward pass per input dimension; works for every score (e.g. ones through custom
  autograd Functions that cannot run under vmap) and is the reference the others are tested on.

All assume the samples of a batch are processed independently (no batch statistics), because
each pass differentiates the summed batch.

Speed: the `losses` benchmark suite (benchmarks/results/losses-<device>.json) times each method at
d = 15, 100 and 200, as the trace alone and as a whole training step. All three do the same arithmetic (d Hessian-vector
products per sample); "batched" and "forward" run them as fewer, d-times larger operations, so
their advantage depends on the layer sizes and the device.
Activations whose double backward lacks a vmap batching rule (nn.Softplus's; use
`score_matching.models.mlp.Softplus`) make "batched" replay them row by row.
"""
from __future__ import annotations

import contextlib
from typing import Callable, Iterator

import torch
from torch import Tensor

from score_matching.losses.common import (
    ScoreFn,
    check_batch,
    check_choice,
    check_optional_positive_int,
    requires_grad_input,
)

TRACE_METHODS = ("batched", "forward", "loop")


def hessian_trace(
    score_fn_or_s: ScoreFn | Tensor,
    x: Tensor,
    method: str = "batched",
    chunk_size: int | None = None,
    create_graph: bool = True,
) -> Tensor:
    """tr(∂s/∂x) per sample, shape (B,), by `method` (one of TRACE_METHODS).

    score_fn_or_s is either a score function (called on x, or on a copy of x that requires grad)
    or, for "batched" and "loop", a score tensor already computed from x. chunk_size bounds how
    many input dimensions "batched" and "forward" process at once (None: all of them).
    create_graph keeps the graph for differentiating the trace ("forward" always keeps it).
    """
    check_choice("method", method, TRACE_METHODS)
    if method == "forward":
        if not callable(score_fn_or_s):
            raise TypeError("method='forward' needs a score function, not a precomputed score tensor")
        with _suggest_loop_on_failure(method):
            return hessian_trace_forward(score_fn_or_s, x, chunk_size)
    if callable(score_fn_or_s):
        x = requires_grad_input(x)
        with torch.enable_grad():
            s = score_fn_or_s(x)
    else:
        s = score_fn_or_s
    if method == "batched":
        with _suggest_loop_on_failure(method):
            return hessian_trace_batched(s, x, chunk_size, create_graph)
    return hessian_trace_loop(s, x, create_graph)


def hessian_trace_batched(
    s: Tensor, x: Tensor, chunk_size: int | None = None, create_graph: bool = True
) -> Tensor:
    """tr(∂s/∂x) per sample from vmapped vector-Jacobian products, shape (B,).

    s must have been computed from x (same shape) with a graph. For each block of chunk_size
    input dimensions j one batched backward pass computes the rows e_jᵀ ∂s/∂x for all samples at
    once; the trace sums their j-th entries. Memory grows with chunk_size (None: all dimensions).
    """
    _check_score(s, x)
    check_optional_positive_int("chunk_size", chunk_size)
    batch, dim = x.shape[0], x[0].numel()

    def row_block(cotangent: Tensor) -> Tensor:
        # torch.func.vmap rather than autograd.grad's is_grads_batched: the latter's vmap ignores
        # custom autograd Functions' vmap rules (an implicit DEQ's adjoint solve needs its own).
        (row,) = torch.autograd.grad(s, x, cotangent, retain_graph=True, create_graph=create_graph,
                                     materialize_grads=True)
        return row

    def diagonal_block(start: int, stop: int) -> Tensor:
        n = stop - start
        basis = torch.eye(dim, dtype=s.dtype, device=s.device)[start:stop]
        cotangents = basis.unsqueeze(1).expand(n, batch, dim).reshape(n, *s.shape)
        rows = torch.func.vmap(row_block)(cotangents)
        offsets = torch.arange(n, device=s.device)
        return rows.reshape(n, batch, dim)[offsets, :, start + offsets].sum(dim=0)

    return _sum_over_blocks(diagonal_block, dim, chunk_size)


def hessian_trace_forward(score_fn: ScoreFn, x: Tensor, chunk_size: int | None = None) -> Tensor:
    """tr(∂s/∂x) per sample from vmapped Jacobian-vector products (forward mode), shape (B,).

    score_fn must be transformable by torch.func (no `torch.autograd.grad` inside; use
    `score_from_log_density(f, functional=True)` for an energy). The result stays differentiable
    with respect to the parameters the score depends on.
    """
    check_batch(x)
    check_optional_positive_int("chunk_size", chunk_size)
    batch, dim = x.shape[0], x[0].numel()

    def column(tangent: Tensor) -> Tensor:
        return torch.func.jvp(score_fn, (x,), (tangent,))[1]

    def diagonal_block(start: int, stop: int) -> Tensor:
        n = stop - start
        basis = torch.eye(dim, dtype=x.dtype, device=x.device)[start:stop]
        tangents = basis.unsqueeze(1).expand(n, batch, dim).reshape(n, *x.shape)
        columns = torch.func.vmap(column)(tangents)
        offsets = torch.arange(n, device=x.device)
        return columns.reshape(n, batch, dim)[offsets, :, start + offsets].sum(dim=0)

    with torch.enable_grad():
        return _sum_over_blocks(diagonal_block, dim, chunk_size)


def hessian_trace_loop(s: Tensor, x: Tensor, create_graph: bool = True) -> Tensor:
    """tr(∂s/∂x) per sample with one backward pass per input dimension, shape (B,).

    The slow reference: D = x[0].numel() passes, each giving ∂s_j/∂x_j for all samples.
    """
    _check_score(s, x)
    flat_s = s.reshape(s.shape[0], -1)
    trace = torch.zeros(s.shape[0], dtype=s.dtype, device=s.device)
    for j in range(flat_s.shape[1]):
        (row,) = torch.autograd.grad(
            flat_s[:, j].sum(), x, retain_graph=True, create_graph=create_graph, materialize_grads=True
        )
        trace = trace + row.reshape(row.shape[0], -1)[:, j]
    return trace


@contextlib.contextmanager
def _suggest_loop_on_failure(method: str) -> Iterator[None]:
    """Re-raise a transform failure (e.g. a custom autograd Function that cannot be vmapped)
    with a pointer to the method that always works."""
    try:
        yield
    except RuntimeError as error:
        raise RuntimeError(f"hessian_trace method={method!r} failed on this score function ({error}); "
                           "method='loop' works for any score function") from error


def _sum_over_blocks(block_fn: Callable[[int, int], Tensor], dim: int, chunk_size: int | None) -> Tensor:
    step = dim if chunk_size is None else chunk_size
    return sum(block_fn(start, min(start + step, dim)) for start in range(0, dim, step))


def _check_score(s: Tensor, x: Tensor) -> None:
    check_batch(x)
    if not isinstance(s, Tensor) or s.shape != x.shape:
        shape = tuple(s.shape) if isinstance(s, Tensor) else type(s).__name__
        raise ValueError(f"the score must have the shape of x {tuple(x.shape)}, got {shape}")
    if not s.requires_grad:
        raise ValueError("the score does not depend on x through a graph; compute it from an x that requires grad")
