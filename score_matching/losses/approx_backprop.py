"""Score matching with approximately backpropagated Hessian diagonals (Kingma & LeCun, 2010).

As in the sliced-score-matching code (its `grads_backward` methods and
`approx_backprop_score_matching`), the log-density's gradient g and Hessian diagonal are sent
backwards through the MLP together (Becker & LeCun's rule), dropping off-diagonal curvature:
    Linear  h_out = W h_in:  g_in = Wᵀ g_out,  d_in = (W∘W)ᵀ d_out
    σ       h_out = σ(a):    g_a = σ'(a) g_out, d_a = σ''(a) g_out + σ'(a)² d_out
starting from g = 1, d = 0 at the scalar output. g is the exact score; d is exact when every
hidden layer's curvature reaching x is diagonal (e.g. one hidden layer), otherwise biased.
The loss is exact score matching with tr ∇² log p replaced by Σ d. It is deterministic.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from score_matching.losses.mlp_propagation import activation_derivatives, layer_inputs, mlp_layers


def approx_bp_hessian_diagonal(log_density_fn: nn.Sequential, x: Tensor) -> tuple[Tensor, Tensor]:
    """(score ∇_x log p, approximate diagonal of ∇²_x log p), each of shape (B, D), for an MLP."""
    layers = mlp_layers(log_density_fn)
    inputs = layer_inputs(layers, x)
    grad = torch.ones(x.shape[0], 1, dtype=x.dtype, device=x.device)
    diag = torch.zeros_like(grad)
    for layer, h in zip(reversed(layers), reversed(inputs)):
        if isinstance(layer, nn.Linear):
            grad, diag = grad @ layer.weight, diag @ layer.weight**2
        else:
            d1, d2 = activation_derivatives(layer, h)
            grad, diag = grad * d1, grad * d2 + diag * d1**2
    return grad, diag


def approx_backprop_score_matching(log_density_fn: nn.Sequential, x: Tensor) -> Tensor:
    """mean_b [½‖∇ log p(x_b)‖² + Σ_d approx ∂²_d log p(x_b)], a scalar, for an MLP log-density.

    log_density_fn must be an nn.Sequential of nn.Linear and elementwise activations (see
    `score_matching.losses.mlp_propagation`), x of shape (B, D).
    """
    score, diag = approx_bp_hessian_diagonal(log_density_fn, x)
    return (0.5 * (score**2).sum(dim=1) + diag.sum(dim=1)).mean()
