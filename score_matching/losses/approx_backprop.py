"""Score matching with approximately backpropagated Hessian diagonals (Kingma & LeCun, 2010).

As in the sliced-score-matching code (its `grads_backward` methods and
`approx_backprop_score_matching`), the log-density's gradient g and Hessian diagonal d are sent
backwards together (Becker & LeCun's rule), dropping off-diagonal curvature:
    Linear  h_out = W h_in:   g_in = Wᵀ g_out,   d_in = (W∘W)ᵀ d_out
    scaling h_out = s ⊙ h_in: g_in = s ⊙ g_out,  d_in = s² ⊙ d_out
    σ       h_out = σ(a):     g_a = σ'(a) g_out, d_a = σ''(a) g_out + σ'(a)² d_out
starting from g = 1, d = 0 at an MLP's scalar output, from g = −z/std², d = −1/std² at a Gaussian
head log N(z; 0, std² I), or from the exact diagonal of a kernel head's dense Hessian (DKEF,
Σ_m (c_m k_m/σ⁴) δ_m² − Σ_m c_m k_m/σ²) before its feature net is swept; through NICE's additive
couplings the update part of (g, d) is swept through the coupling's MLP and added to the kept part
(`score_matching.losses.flow_propagation`), which drops the coupling's kept/update cross curvature too. g is the exact score; d is exact when no
off-diagonal curvature is dropped (e.g. an MLP with one hidden layer), otherwise biased.
The loss is exact score matching with tr ∇² log p replaced by Σ d. It is deterministic.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from score_matching.losses.flow_propagation import backward_sweep
from score_matching.losses.mlp_propagation import Curvature, PropagationRule


class ApproxBackpropRule(PropagationRule):
    """Carries d, the approximate Hessian diagonal, as a one-tensor curvature."""

    def output(self, like: Tensor) -> Curvature:
        return (torch.zeros_like(like),)

    def scaled_identity(self, like: Tensor, scale: Tensor) -> Curvature:
        return (torch.ones_like(like) * scale,)

    def rank_one_sum(self, vectors: Tensor, weights: Tensor) -> Curvature:
        return (torch.einsum("nm,nmw->nw", weights, vectors**2),)

    def linear(self, curvature: Curvature, weight: Tensor) -> Curvature:
        return (curvature[0] @ weight**2,)

    def scale(self, curvature: Curvature, scale: Tensor) -> Curvature:
        return (curvature[0] * scale**2,)

    def activation(self, curvature: Curvature, grad: Tensor, first: Tensor, second: Tensor) -> Curvature:
        return (grad * second + curvature[0] * first**2,)


def approx_bp_hessian_diagonal(log_density_fn: nn.Module, x: Tensor) -> tuple[Tensor, Tensor]:
    """(score ∇_x log p, approximate diagonal of ∇²_x log p), each of shape (B, D).

    log_density_fn: an nn.Sequential MLP or a model with `propagation_steps()` such as NICE.
    """
    state = backward_sweep(ApproxBackpropRule(), log_density_fn, x)
    return state.grad, state.curvature[0]


def approx_backprop_score_matching(log_density_fn: nn.Module, x: Tensor) -> Tensor:
    """mean_b [½‖∇ log p(x_b)‖² + Σ_d approx ∂²_d log p(x_b)], a scalar.

    log_density_fn: an nn.Sequential of nn.Linear and elementwise activations with output (N, 1),
    or a model with `propagation_steps()` such as NICE; x of shape (B, D).
    """
    score, diag = approx_bp_hessian_diagonal(log_density_fn, x)
    return (0.5 * (score**2).sum(dim=1) + diag.sum(dim=1)).mean()
