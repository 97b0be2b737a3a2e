"""CP and approximate backprop on DKEF (paper table 2's CP row) against explicit float64 Hessians.

DKEF's log p̃ is q0's Gaussian plus one kernel expansion per feature net; the layer-by-layer
losses see it through `DKEF.propagation_steps` (a SumHead of a GaussianHead and
KernelExpansionHeads), under a fixed α (`FixedAlphaDKEF`).
"""
from __future__ import annotations

import torch

from score_matching.losses import approx_backprop_score_matching, approx_bp_hessian_diagonal
from score_matching.models.dkef import DKEF, FixedAlphaDKEF, split_batch_loss
from test_losses import (
    F64,
    assert_cp_diagonal_unbiased,
    assert_approx_bp_exact,
    assert_cp_unbiased,
    assert_sweep_scores_exact,
    per_sample_derivatives,
)


def tiny_dkef(hidden: int = 4, latent: int = 3, depth: int = 2, seed: int = 0) -> tuple[DKEF, torch.Tensor]:
    """A float64 DKEF on 3 features with 5 inducing points, 2 kernels, and a random α of both signs."""
    torch.manual_seed(seed)
    model = DKEF(in_features=3, n_inducing=5, n_kernels=2, hidden=hidden, depth=depth, latent=latent,
                 init_bandwidths=(1.0, 2.0)).to(F64)
    model.init_inducing_points(torch.randn(20, 3, dtype=F64), torch.Generator().manual_seed(seed))
    with torch.no_grad():
        model.kernel_logits.copy_(torch.randn(2, dtype=F64))
    return model, 3 * torch.randn(5, dtype=F64)


def test_scores_of_both_sweeps_are_exact():
    model, alpha = tiny_dkef()
    x = torch.randn(4, 3, dtype=F64, generator=torch.Generator().manual_seed(1))
    assert_sweep_scores_exact(FixedAlphaDKEF(model, alpha), x, 2)


def test_cp_hessian_diagonal_unbiased():
    model, alpha = tiny_dkef(seed=3)
    x = torch.randn(4, 3, dtype=F64, generator=torch.Generator().manual_seed(4))
    assert_cp_diagonal_unbiased(FixedAlphaDKEF(model, alpha), x, 5)


def test_cp_loss_and_parameter_gradients_unbiased():
    model, alpha = tiny_dkef(seed=6)
    log_density = FixedAlphaDKEF(model, alpha)
    x = torch.randn(3, 3, dtype=F64, generator=torch.Generator().manual_seed(7))
    assert_cp_unbiased(model, log_density, x, 8, swept=log_density)


def test_approx_bp_exact_for_width_one_feature_nets_and_biased_otherwise():
    x = torch.randn(4, 3, dtype=F64, generator=torch.Generator().manual_seed(9))
    # Width 1 and latent 1: every Hessian inside the feature nets is 1×1 and the kernel's Hessian
    # at u is 1×1, so no off-diagonal curvature is dropped; the kernels and q0 add diagonals exactly.
    model, alpha = tiny_dkef(hidden=1, latent=1, seed=10)
    log_density = FixedAlphaDKEF(model, alpha)
    assert_approx_bp_exact(model, log_density, log_density, x)
    # Wider nets and a latent of 3 (a dense kernel Hessian at u) drop cross terms.
    wider, alpha = tiny_dkef(hidden=4, latent=3, seed=10)
    log_density = FixedAlphaDKEF(wider, alpha)
    _, h = per_sample_derivatives(log_density, x)
    _, diag = approx_bp_hessian_diagonal(log_density, x)
    assert (diag - h.diagonal(dim1=1, dim2=2)).abs().max() > 1e-3  # vs ~1e-16 when exact


def test_split_batch_loss_hands_cp_the_log_density_under_the_fitted_alpha():
    model, _ = tiny_dkef(seed=11)
    x = torch.randn(8, 3, dtype=F64, generator=torch.Generator().manual_seed(12))
    seen = {}

    def loss_fn(log_density, rest):
        seen["alpha"], seen["rest"] = log_density.alpha, rest
        return approx_backprop_score_matching(log_density, rest)

    loss = split_batch_loss(model, x, loss_fn, takes_log_density=True)
    torch.testing.assert_close(seen["alpha"], model.fit_alpha(x[:4]), rtol=1e-12, atol=1e-14)
    assert torch.equal(seen["rest"], x[4:])
    loss.backward()
    assert model.log10_lambda.grad is not None and model.log10_lambda.grad.abs() > 0  # through α

