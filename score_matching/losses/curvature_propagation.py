"""Score matching with curvature propagation (CP; Martens, Sutskever & Swersky, 2012).

CP estimates the Hessian H = ∇²_x log p of an MLP without forming it. For a network of affine
layers and elementwise activations h = σ(a), H = Σ_l J_lᵀ M_l J_l with J_l = ∂a_l/∂x and
M_l = diag(σ''(a_l) ∘ g_l), g_l the gradient of log p at the layer's output. Writing
M_l = F_l F_l with the complex diagonal F_l = √M_l⁺ + i√M_l⁻ and drawing independent Rademacher
vectors v_l, the complex vector S = Σ_l J_lᵀ F_l v_l satisfies E[S Sᵀ] = H, so
    diag estimate = (Re S)² − (Im S)²
is unbiased for diag(H), and its sum for tr H. S is accumulated in the same backward sweep as the
gradient, as the sliced-score-matching code did for its "CP" baseline (`grads_backward_S`):
    Linear  h_out = W h_in:  g_in = Wᵀ g_out,   S_in = Wᵀ S_out
    σ       h_out = σ(a):    g_a = σ'(a) g_out, S_a = σ'(a) S_out + F v.
The loss is exact score matching with the trace replaced by this estimate, averaged over
n_particles independent draws; its parameter gradient is also unbiased.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from score_matching.losses.common import check_positive_int, replicate
from score_matching.losses.mlp_propagation import activation_derivatives, check_mlp_input, layer_inputs, mlp_layers
from score_matching.losses.projections import sample_projections


def cp_hessian_diagonal(
    log_density_fn: nn.Sequential, x: Tensor, n_particles: int = 1, generator: torch.Generator | None = None
) -> tuple[Tensor, Tensor]:
    """(score ∇_x log p, CP estimate of diag ∇²_x log p averaged over n_particles), each (B, D)."""
    check_positive_int("n_particles", n_particles)
    layers = mlp_layers(log_density_fn)
    check_mlp_input(x)
    rows = replicate(x, n_particles)
    inputs = layer_inputs(layers, rows)
    grad = torch.ones(rows.shape[0], 1, dtype=x.dtype, device=x.device)
    s_real, s_imag = torch.zeros_like(grad), torch.zeros_like(grad)
    for layer, h in zip(reversed(layers), reversed(inputs)):
        if isinstance(layer, nn.Linear):
            grad, s_real, s_imag = grad @ layer.weight, s_real @ layer.weight, s_imag @ layer.weight
        else:
            d1, d2 = activation_derivatives(layer, h)
            curvature = grad * d2
            v = sample_projections(curvature, "rademacher", generator)
            s_real = s_real * d1 + _sqrt_positive_part(curvature) * v
            s_imag = s_imag * d1 + _sqrt_positive_part(-curvature) * v
            grad = grad * d1
    diag = (s_real**2 - s_imag**2).reshape(n_particles, x.shape[0], -1).mean(dim=0)
    return grad[: x.shape[0]], diag


def curvature_propagation(
    log_density_fn: nn.Sequential, x: Tensor, n_particles: int = 1, generator: torch.Generator | None = None
) -> Tensor:
    """mean_b [½‖∇ log p(x_b)‖² + Σ_d CP estimate of ∂²_d log p(x_b)], a scalar, for an MLP.

    log_density_fn must be an nn.Sequential of nn.Linear and elementwise activations (see
    `score_matching.losses.mlp_propagation`), x of shape (B, D); n_particles independent CP
    draws are averaged (x is replicated, as in sliced score matching).
    """
    score, diag = cp_hessian_diagonal(log_density_fn, x, n_particles, generator)
    return (0.5 * (score**2).sum(dim=1) + diag.sum(dim=1)).mean()


def _sqrt_positive_part(m: Tensor) -> Tensor:
    """√max(m, 0) with a zero (not NaN) gradient where m <= 0."""
    positive = m > 0
    # sqrt is only evaluated on positive entries: its infinite slope at 0 would otherwise turn
    # the masked-out gradient into NaN.
    return torch.where(positive, torch.where(positive, m, torch.ones_like(m)).sqrt(), torch.zeros_like(m))
