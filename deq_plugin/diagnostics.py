"""Diagnostics: how contractive a cell is at its fixed point."""
from __future__ import annotations

import torch
from torch import Tensor, nn


def contraction_factor(cell: nn.Module, z_star: Tensor, u: Tensor, n_iter: int = 30, seed: int = 0) -> Tensor:
    """Per-sample estimate of ||∂f/∂z||₂ at (z*, u) by power iteration on JᵀJ.

    Uses one Jacobian-vector and one vector-Jacobian product per step and never forms J. The cell
    must act on each sample independently (no batch statistics), as DEQ cells do.
    """
    if n_iter < 1:
        raise ValueError(f"n_iter must be >= 1, got {n_iter}")
    z_star, u = z_star.detach(), u.detach()
    generator = torch.Generator().manual_seed(seed)
    v = torch.randn(z_star.shape, generator=generator, dtype=z_star.dtype).to(z_star.device)

    def unit(t: Tensor) -> Tensor:
        norms = t.flatten(1).norm(dim=1).clamp_min(torch.finfo(t.dtype).tiny)
        return t / norms.view(-1, *([1] * (t.dim() - 1)))

    def f(z: Tensor) -> Tensor:
        return cell(z, u)

    with torch.enable_grad():
        _, vjp_fn = torch.func.vjp(f, z_star)
        v = unit(v)
        for _ in range(n_iter):
            _, jv = torch.func.jvp(f, (z_star,), (v,))
            v = unit(vjp_fn(jv)[0]).detach()
        _, jv = torch.func.jvp(f, (z_star,), (v,))
    return jv.flatten(1).norm(dim=1).detach()
