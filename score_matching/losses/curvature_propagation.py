"""Score matching with curvature propagation (CP; Martens, Sutskever & Swersky, 2012).

CP estimates the Hessian H = ∇²_x log p without forming it. For a log-density built of affine
layers, elementwise activations h = σ(a) and a Gaussian head, H = Σ_l J_lᵀ M_l J_l with J_l the
Jacobian of the node's input with respect to x and M_l its own curvature: diag(σ''(a_l) ∘ g_l) for
an activation (g_l the gradient of log p at its output), −I/std² for log N(z; 0, std² I), and for a
kernel head Σ_m c_m exp(−‖u − w_m‖²/2σ²) (DKEF) the dense Σ_m (c_m k_m/σ⁴) δ_m δ_mᵀ − (Σ_m c_m k_m/σ²) I
with δ_m = u − w_m. Writing M_l = F_l F_l with the complex F_l = √M_l⁺ + i√M_l⁻ taken per
diagonal entry (F = i·I for the standard Gaussian), or per rank-one term (one Rademacher scalar
r_m for each δ_m), and drawing independent Rademacher vectors v_l, the complex vector
S = Σ_l J_lᵀ F_l v_l satisfies
E[S Sᵀ] = H, so
    diag estimate = (Re S)² − (Im S)²
is unbiased for diag(H), and its sum for tr H. S is accumulated in the same backward sweep as the
gradient, as the sliced-score-matching code did for its "CP" baseline (`grads_backward_S`):
    Linear  h_out = W h_in:  g_in = Wᵀ g_out,   S_in = Wᵀ S_out
    scaling h_out = s ⊙ h_in: g_in = s ⊙ g_out,  S_in = s ⊙ S_out
    σ       h_out = σ(a):    g_a = σ'(a) g_out, S_a = σ'(a) S_out + F v
    Gaussian log N(z; 0, std² I): g_z = −z/std², S_z = i v/std
    kernel head at u:         g_u = −Σ_m c_m k_m δ_m/σ², S_u = Σ_m F(c_m k_m/σ⁴) r_m δ_m + F(−Σ_m c_m k_m/σ²) v
and through NICE's additive couplings and sums of heads as `score_matching.losses.flow_propagation`
describes.
The loss is exact score matching with the trace replaced by this estimate, averaged over
n_particles independent draws; its parameter gradient is also unbiased.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from score_matching.losses.common import check_positive_int, replicate
from score_matching.losses.flow_propagation import backward_sweep
from score_matching.losses.mlp_propagation import Curvature, PropagationRule, check_mlp_input
from score_matching.losses.projections import sample_projections


class CurvaturePropagationRule(PropagationRule):
    """Carries S = (Re S, Im S), drawing fresh Rademacher noise at every curvature source."""

    def __init__(self, generator: torch.Generator | None = None) -> None:
        self.generator = generator

    def output(self, like: Tensor) -> Curvature:
        return torch.zeros_like(like), torch.zeros_like(like)

    def scaled_identity(self, like: Tensor, scale: Tensor) -> Curvature:
        # c·I = F F with F = √c⁺ + i√c⁻ (i·I for log N(z; 0, I)): one Rademacher vector.
        scale = torch.as_tensor(scale, dtype=like.dtype, device=like.device)
        v = self._rademacher(like)
        return _sqrt_positive_part(scale) * v, _sqrt_positive_part(-scale) * v

    def rank_one_sum(self, vectors: Tensor, weights: Tensor) -> Curvature:
        # Σ_m a_m v_m v_mᵀ = E[S Sᵀ] for S = Σ_m F(a_m) r_m v_m, r_m independent Rademacher scalars.
        r = self._rademacher(weights)
        return tuple(torch.einsum("nm,nmw->nw", _sqrt_positive_part(sign * weights) * r, vectors) for sign in (1, -1))

    def linear(self, curvature: Curvature, weight: Tensor) -> Curvature:
        return tuple(s @ weight for s in curvature)

    def scale(self, curvature: Curvature, scale: Tensor) -> Curvature:
        return tuple(s * scale for s in curvature)

    def activation(self, curvature: Curvature, grad: Tensor, first: Tensor, second: Tensor) -> Curvature:
        s_real, s_imag = curvature
        m = grad * second
        v = self._rademacher(m)
        return s_real * first + _sqrt_positive_part(m) * v, s_imag * first + _sqrt_positive_part(-m) * v

    def _rademacher(self, like: Tensor) -> Tensor:
        return sample_projections(like, "rademacher", self.generator)


def cp_hessian_diagonal(
    log_density_fn: nn.Module, x: Tensor, n_particles: int = 1, generator: torch.Generator | None = None
) -> tuple[Tensor, Tensor]:
    """(score ∇_x log p, CP estimate of diag ∇²_x log p averaged over n_particles), each (B, D).

    log_density_fn: an nn.Sequential MLP or a model with `propagation_steps()` such as NICE (see
    `score_matching.losses.flow_propagation`).
    """
    check_positive_int("n_particles", n_particles)
    check_mlp_input(x)
    state = backward_sweep(CurvaturePropagationRule(generator), log_density_fn, replicate(x, n_particles))
    s_real, s_imag = state.curvature
    diag = (s_real**2 - s_imag**2).reshape(n_particles, x.shape[0], -1).mean(dim=0)
    return state.grad[: x.shape[0]], diag


def curvature_propagation(
    log_density_fn: nn.Module, x: Tensor, n_particles: int = 1, generator: torch.Generator | None = None
) -> Tensor:
    """mean_b [½‖∇ log p(x_b)‖² + Σ_d CP estimate of ∂²_d log p(x_b)], a scalar.

    log_density_fn: an nn.Sequential of nn.Linear and elementwise activations with output (N, 1),
    or a model with `propagation_steps()` such as NICE; x of shape (B, D). n_particles independent
    CP draws are averaged (x is replicated, as in sliced score matching).
    """
    score, diag = cp_hessian_diagonal(log_density_fn, x, n_particles, generator)
    return (0.5 * (score**2).sum(dim=1) + diag.sum(dim=1)).mean()


def _sqrt_positive_part(m: Tensor) -> Tensor:
    """√max(m, 0) with a zero (not NaN) gradient where m <= 0."""
    positive = m > 0
    # sqrt is only evaluated on positive entries: its infinite slope at 0 would otherwise turn
    # the masked-out gradient into NaN.
    return torch.where(positive, torch.where(positive, m, torch.ones_like(m)).sqrt(), torch.zeros_like(m))
