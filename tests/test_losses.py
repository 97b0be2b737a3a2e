"""Score-matching losses against independent references: closed forms for Gaussian models,
explicit per-sample Hessians (torch.autograd.functional) for MLP energies, in float64."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from score_matching.models.nice import NICE
from score_matching.sampling import geometric_sigmas

from score_matching.losses import (
    LOSSES,
    PROJECTIONS,
    TRACE_METHODS,
    annealed_dsm,
    annealed_ssm_vr,
    approx_backprop_score_matching,
    approx_bp_hessian_diagonal,
    cp_hessian_diagonal,
    curvature_propagation,
    denoising_score_matching,
    exact_score_matching,
    fisher_divergence,
    hessian_trace,
    score_from_log_density,
    sliced_score_matching,
    sliced_score_matching_vr,
)

F64 = torch.float64
N_PARTICLES = 20_000
Z = 5.0  # tolerance of the Monte Carlo checks, in standard errors


def gaussian(d: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A random precision P (SPD) and mean μ."""
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((d, d))
    return a @ a.T / d + np.eye(d), rng.standard_normal(d)


def gaussian_log_density(precision: np.ndarray, mean: np.ndarray):
    """log p(x) = −½ (x−μ)ᵀP(x−μ) on the flattened sample."""
    p, mu = torch.tensor(precision), torch.tensor(mean)
    return lambda x: -0.5 * (((x.flatten(1) - mu) @ p) * (x.flatten(1) - mu)).sum(1)


def mlp(d: int = 5, hidden: int = 16, depth: int = 2, seed: int = 0, activation=nn.Softplus) -> nn.Sequential:
    torch.manual_seed(seed)
    layers: list[nn.Module] = []
    for i in range(depth):
        layers += [nn.Linear(d if i == 0 else hidden, hidden), activation()]
    return nn.Sequential(*layers, nn.Linear(hidden, 1)).to(F64)


def energy(net: nn.Module):
    return lambda x: net(x).squeeze(-1)


def per_sample_derivatives(log_density, x: torch.Tensor, create_graph: bool = False):
    """Gradients (B, D) and Hessians (B, D, D) of log_density, one sample at a time."""
    grads, hessians = [], []
    for xb in x:
        f = lambda u: log_density(u.unsqueeze(0)).squeeze(0)  # noqa: E731
        grads.append(torch.autograd.functional.jacobian(f, xb, create_graph=create_graph))
        hessians.append(torch.autograd.functional.hessian(f, xb, create_graph=create_graph))
    return torch.stack(grads), torch.stack(hessians)


def reference_sm(log_density, x: torch.Tensor, create_graph: bool = False) -> torch.Tensor:
    g, h = per_sample_derivatives(log_density, x, create_graph)
    return (0.5 * g.pow(2).sum(1) + h.diagonal(dim1=1, dim2=2).sum(1)).mean()


def param_grads(loss: torch.Tensor, net: nn.Module) -> list[torch.Tensor]:
    return list(torch.autograd.grad(loss, list(net.parameters()), materialize_grads=True))


def quadratic_form_std(a: torch.Tensor, n: int) -> float:
    """Bound on the std of the mean of vᵀA_b v over B samples and n draws each: Var ≤ 2‖A_b‖_F²
    holds for Gaussian, Rademacher and √D-sphere v with E[vvᵀ] = I."""
    return math.sqrt(2 * a.pow(2).sum().item() / n) / a.shape[0]


# --- Gaussian model: closed forms -------------------------------------------------------------


@pytest.mark.parametrize("trace", TRACE_METHODS)
@pytest.mark.parametrize("chunk_size", [None, 5])
@pytest.mark.parametrize("shape", [(7, 6), (3, 2, 3, 2)])
def test_exact_sm_gaussian_closed_form(trace, chunk_size, shape):
    d = math.prod(shape[1:])
    precision, mean = gaussian(d)
    x = torch.randn(shape, dtype=F64, generator=torch.Generator().manual_seed(1))
    score_fn = score_from_log_density(gaussian_log_density(precision, mean), functional=trace == "forward")
    loss = exact_score_matching(score_fn, x, trace=trace, chunk_size=chunk_size)
    residual = (x.flatten(1).numpy() - mean) @ precision
    expected = np.mean(0.5 * (residual**2).sum(1) - np.trace(precision))
    assert loss.item() == pytest.approx(expected, rel=1e-12)


def test_hessian_trace_of_a_direct_score_function():
    precision, mean = gaussian(6)
    p, mu = torch.tensor(precision), torch.tensor(mean)
    x = torch.randn(4, 6, dtype=F64)
    for method in TRACE_METHODS:
        trace = hessian_trace(lambda z: -(z - mu) @ p, x, method=method)
        torch.testing.assert_close(trace, torch.full((4,), -np.trace(precision), dtype=F64), rtol=1e-12, atol=0)


@pytest.mark.parametrize("projection", PROJECTIONS)
def test_ssm_and_ssm_vr_gaussian_unbiased(projection):
    d, batch = 6, 3
    precision, mean = gaussian(d)
    x = torch.randn(batch, d, dtype=F64, generator=torch.Generator().manual_seed(2))
    score_fn = score_from_log_density(gaussian_log_density(precision, mean))
    s = -(x.numpy() - mean) @ precision
    exact = np.mean(0.5 * (s**2).sum(1) - np.trace(precision))
    generator = torch.Generator().manual_seed(3)
    vr = sliced_score_matching_vr(score_fn, x, n_particles=N_PARTICLES, projection=projection, generator=generator)
    hessian = -torch.tensor(precision).expand(batch, d, d)
    assert vr.item() == pytest.approx(exact, abs=Z * quadratic_form_std(hessian, N_PARTICLES))
    ssm = sliced_score_matching(score_fn, x, n_particles=N_PARTICLES, projection=projection, generator=generator)
    st = torch.tensor(s)
    a = 0.5 * st[:, :, None] * st[:, None, :] + hessian
    assert ssm.item() == pytest.approx(exact, abs=Z * quadratic_form_std(a, N_PARTICLES))


def test_dsm_gaussian_closed_form_given_the_noise():
    d, sigma = 5, 0.3
    precision, mean = gaussian(d)
    x = torch.randn(8, d, dtype=F64)
    noise = torch.randn(8, d, dtype=F64)
    score_fn = score_from_log_density(gaussian_log_density(precision, mean))
    loss = denoising_score_matching(score_fn, x, sigma, noise=noise)
    x_noisy = x.numpy() + sigma * noise.numpy()
    residual = -(x_noisy - mean) @ precision + (x_noisy - x.numpy()) / sigma**2
    assert loss.item() == pytest.approx(np.mean(0.5 * (residual**2).sum(1)), rel=1e-12)


def test_dsm_gaussian_mean_over_noise():
    # Per draw the loss is ½‖c + Mε‖² with c = −P(x−μ), M = I/σ − σP: mean ½‖c‖² + ½‖M‖_F²,
    # variance ‖Mc‖² + ½‖M²‖_F² (ε standard normal).
    d, sigma, n = 4, 0.5, 100_000
    precision, mean = gaussian(d)
    x = torch.randn(1, d, dtype=F64).expand(n, d)
    score_fn = score_from_log_density(gaussian_log_density(precision, mean))
    loss = denoising_score_matching(score_fn, x, sigma, generator=torch.Generator().manual_seed(4))
    c, m = -(x[0].numpy() - mean) @ precision, np.eye(d) / sigma - sigma * precision
    expected = 0.5 * (c**2).sum() + 0.5 * (m**2).sum()
    std_error = math.sqrt((((m @ c) ** 2).sum() + 0.5 * ((m @ m) ** 2).sum()) / n)
    assert loss.item() == pytest.approx(expected, abs=Z * std_error)


def test_fisher_divergence_between_gaussians():
    d = 4
    (p, mu), (q, nu) = gaussian(d, 0), gaussian(d, 1)
    x = torch.randn(6, d, dtype=F64)
    value = fisher_divergence(
        score_from_log_density(gaussian_log_density(p, mu)), x, score_from_log_density(gaussian_log_density(q, nu))
    )
    diff = -(x.numpy() - mu) @ p + (x.numpy() - nu) @ q
    assert value.item() == pytest.approx(np.mean(0.5 * (diff**2).sum(1)), rel=1e-12)


def test_score_from_log_density_without_grad_on_input():
    precision, mean = gaussian(3)
    x = torch.randn(2, 3, dtype=F64)
    with torch.no_grad():
        for functional in (False, True):
            s = score_from_log_density(gaussian_log_density(precision, mean), functional=functional)(x)
            np.testing.assert_allclose(s.numpy(), -(x.numpy() - mean) @ precision, rtol=1e-12)
    assert not x.requires_grad


class CubeWithDataDependentBackward(torch.autograd.Function):
    """s(x) = x³ whose backward branches on its input, as DEQ backward solvers do: cannot be vmapped."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x**3

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        if bool((grad == 0).all()):
            return torch.zeros_like(grad)
        return grad * 3 * x**2


def test_loop_trace_for_score_functions_that_cannot_be_vmapped():
    x = torch.randn(3, 4, dtype=F64)
    score_fn = CubeWithDataDependentBackward.apply
    loss = exact_score_matching(score_fn, x, trace="loop")
    assert loss.item() == pytest.approx((0.5 * x.pow(6).sum(1) + 3 * x.pow(2).sum(1)).mean().item(), rel=1e-12)
    for method in ("batched", "forward"):
        with pytest.raises(RuntimeError, match="method='loop' works"):
            exact_score_matching(score_fn, x, trace=method)


# --- MLP energies: explicit Hessians ----------------------------------------------------------


@pytest.mark.parametrize("trace", TRACE_METHODS)
def test_exact_sm_mlp_value_and_parameter_gradients(trace):
    net = mlp()
    x = torch.randn(4, 5, dtype=F64, generator=torch.Generator().manual_seed(5))
    reference = reference_sm(energy(net), x, create_graph=True)
    loss = exact_score_matching(score_from_log_density(energy(net), functional=trace == "forward"), x, trace=trace)
    assert loss.item() == pytest.approx(reference.item(), rel=1e-12)
    for got, want in zip(param_grads(loss, net), param_grads(reference, net)):
        torch.testing.assert_close(got, want, rtol=1e-8, atol=1e-12)


@pytest.mark.parametrize("projection", PROJECTIONS)
def test_ssm_and_ssm_vr_mlp_unbiased(projection):
    net = mlp(seed=1)
    x = torch.randn(3, 5, dtype=F64, generator=torch.Generator().manual_seed(6))
    g, h = (t.detach() for t in per_sample_derivatives(energy(net), x))
    exact = (0.5 * g.pow(2).sum(1) + h.diagonal(dim1=1, dim2=2).sum(1)).mean().item()
    score_fn = score_from_log_density(energy(net))
    generator = torch.Generator().manual_seed(7)
    vr = sliced_score_matching_vr(score_fn, x, n_particles=N_PARTICLES, projection=projection, generator=generator)
    assert vr.item() == pytest.approx(exact, abs=Z * quadratic_form_std(h, N_PARTICLES))
    ssm = sliced_score_matching(score_fn, x, n_particles=N_PARTICLES, projection=projection, generator=generator)
    a = 0.5 * g[:, :, None] * g[:, None, :] + h
    assert ssm.item() == pytest.approx(exact, abs=Z * quadratic_form_std(a, N_PARTICLES))


def test_cp_hessian_diagonal_unbiased_and_score_exact():
    net = mlp(seed=2, activation=nn.Tanh)
    x = torch.randn(4, 5, dtype=F64, generator=torch.Generator().manual_seed(8))
    g, h = (t.detach() for t in per_sample_derivatives(energy(net), x))
    # Single-draw estimates for N_PARTICLES copies of each sample give a mean and its std error.
    rows = x.repeat(N_PARTICLES, 1)
    score, draws = cp_hessian_diagonal(net, rows, n_particles=1, generator=torch.Generator().manual_seed(9))
    draws = draws.detach().reshape(N_PARTICLES, 4, 5)
    std_error = draws.std(dim=0) / math.sqrt(N_PARTICLES)
    assert bool(((draws.mean(dim=0) - h.diagonal(dim1=1, dim2=2)).abs() <= Z * std_error + 1e-12).all())
    torch.testing.assert_close(score[:4], g, rtol=1e-12, atol=1e-14)


def assert_cp_unbiased(
    model: nn.Module, log_density, x: torch.Tensor, seed: int, repeats: int = 100, swept=None
) -> None:
    """CP's loss on `swept` (default: model) and every gradient in model's parameters, averaged over
    repeats of 100 particles, match exact SM of log_density within Z standard errors of that average."""
    reference = reference_sm(log_density, x, create_graph=True)
    want = torch.cat([g.flatten() for g in param_grads(reference, model)])
    generator = torch.Generator().manual_seed(seed)
    values, grads = [], []
    for _ in range(repeats):
        loss = curvature_propagation(model if swept is None else swept, x, n_particles=100, generator=generator)
        values.append(loss.detach())
        grads.append(torch.cat([g.flatten() for g in param_grads(loss, model)]))
    values, grads = torch.stack(values), torch.stack(grads)
    assert abs(values.mean() - reference.detach()) <= Z * values.std() / math.sqrt(repeats)
    assert bool(((grads.mean(dim=0) - want).abs() <= Z * grads.std(dim=0) / math.sqrt(repeats) + 1e-12).all())


def test_cp_loss_and_parameter_gradients_unbiased():
    net = mlp(seed=3)
    assert_cp_unbiased(net, energy(net), torch.randn(3, 5, dtype=F64, generator=torch.Generator().manual_seed(10)), 11)


def test_approx_bp_exact_for_one_hidden_layer():
    net = mlp(depth=1, seed=4)
    assert_approx_bp_exact(net, net, energy(net), torch.randn(5, 5, dtype=F64))


def assert_approx_bp_exact(model: nn.Module, swept, log_density, x: torch.Tensor) -> None:
    """Approx-BP on `swept` gives exact SM of log_density: score, Hessian diagonal, loss and every
    gradient in model's parameters."""
    g, h = per_sample_derivatives(log_density, x)
    score, diag = approx_bp_hessian_diagonal(swept, x)
    torch.testing.assert_close(score, g, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(diag, h.diagonal(dim1=1, dim2=2), rtol=1e-10, atol=1e-14)
    loss = approx_backprop_score_matching(swept, x)
    reference = reference_sm(log_density, x, create_graph=True)
    assert loss.item() == pytest.approx(reference.item(), rel=1e-12)
    for got, want in zip(param_grads(loss, model), param_grads(reference, model)):
        torch.testing.assert_close(got, want, rtol=1e-8, atol=1e-12)


def test_approx_bp_exact_with_diagonal_hidden_weights_and_biased_otherwise():
    net = mlp(d=5, hidden=5, depth=3, seed=5)
    x = torch.randn(4, 5, dtype=F64)
    with torch.no_grad():
        for layer in (net[2], net[4]):  # hidden-to-hidden maps without cross-unit mixing
            layer.weight.copy_(torch.diag(torch.randn(5, dtype=F64)))
    g, h = per_sample_derivatives(energy(net), x)
    score, diag = approx_bp_hessian_diagonal(net, x)
    torch.testing.assert_close(diag, h.diagonal(dim1=1, dim2=2), rtol=1e-10, atol=1e-14)
    biased = mlp(d=5, hidden=5, depth=3, seed=5)
    _, h = per_sample_derivatives(energy(biased), x)
    score, diag = approx_bp_hessian_diagonal(biased, x)
    assert (diag - h.diagonal(dim1=1, dim2=2)).abs().max() > 1e-4
    # The first term is always exact score matching's.
    g, _ = per_sample_derivatives(energy(biased), x)
    torch.testing.assert_close(score, g, rtol=1e-12, atol=1e-14)


# --- NICE flows: the sweep through couplings, scaling and Gaussian prior ----------------------


def tiny_nice(n_couplings: int = 2, hidden: int = 5, depth: int = 2, seed: int = 0) -> NICE:
    """A float64 NICE on 6 features with a random, nonzero log_scale."""
    torch.manual_seed(seed)
    model = NICE(in_features=6, hidden=hidden, n_couplings=n_couplings, depth=depth).to(F64)
    with torch.no_grad():
        model.log_scale.copy_(0.5 * torch.randn(6, dtype=F64))
    return model


def coupling_linears(coupling: nn.Module) -> list[nn.Linear]:
    """A NICE coupling's Linear layers in forward order: in_layer, the stack's, out_layer."""
    net = coupling.net
    return [net.in_layer[0], *net.stack.layers[::2], net.out_layer]


def approx_bp_reference(model: NICE, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Becker & LeCun's (g, d) recursion written out from the formulas for a softplus NICE.

    Forward: h[upd] += W_L σ(… σ(W_1 h[keep] + b_1) …) + b_L per coupling, z = exp(s) h. Backward
    from log N(z; 0, I): g = −z, d = −1; scaling: g·e^s, d·e^{2s}; per coupling, (g, d)[upd] is sent
    through the net (Linear: Wᵀg, (W²)ᵀd; softplus: σ'g, σ''g + σ'²d with σ' = sigmoid,
    σ'' = sigmoid·(1 − sigmoid)) and added to (g, d)[keep].
    """
    h, tapes = x.clone(), []
    for coupling in model.couplings:
        keep, upd = coupling.keep_index, coupling.update_index
        linears, pre_activations, u = coupling_linears(coupling), [], h[:, keep]
        for layer in linears[:-1]:
            pre_activations.append(u @ layer.weight.T + layer.bias)
            u = F.softplus(pre_activations[-1])
        h = h.clone()
        h[:, upd] = h[:, upd] + u @ linears[-1].weight.T + linears[-1].bias
        tapes.append((linears, pre_activations))
    scale = torch.exp(model.log_scale)
    g, d = -(h * scale) * scale, -torch.ones_like(h) * scale**2
    for coupling, (linears, pre_activations) in zip(reversed(model.couplings), reversed(tapes)):
        keep, upd = coupling.keep_index, coupling.update_index
        gu, du = g[:, upd] @ linears[-1].weight, d[:, upd] @ linears[-1].weight ** 2
        for layer, a in zip(reversed(linears[:-1]), reversed(pre_activations)):
            s1 = torch.sigmoid(a)
            s2 = s1 * (1 - s1)
            gu, du = gu * s1, gu * s2 + du * s1**2
            gu, du = gu @ layer.weight, du @ layer.weight**2
        g, d = g.clone(), d.clone()
        g[:, keep], d[:, keep] = g[:, keep] + gu, d[:, keep] + du
    return g, d


def assert_sweep_scores_exact(log_density, x: torch.Tensor, seed: int) -> None:
    """Both layer-by-layer sweeps (CP, approx-BP) return the exact score as their first output."""
    g, _ = per_sample_derivatives(log_density, x)
    cp_score, _ = cp_hessian_diagonal(log_density, x, n_particles=3, generator=torch.Generator().manual_seed(seed))
    bp_score, _ = approx_bp_hessian_diagonal(log_density, x)
    torch.testing.assert_close(cp_score, g, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(bp_score, g, rtol=1e-12, atol=1e-14)


def assert_cp_diagonal_unbiased(log_density, x: torch.Tensor, seed: int) -> None:
    """Single-draw CP estimates for N_PARTICLES copies of each sample are i.i.d.; by the CLT their mean
    lies within Z = 5 estimated standard errors of diag H (two-sided ≈ 6e-7 per entry). Every
    coordinate must get noise (a Gaussian prior's at least)."""
    _, h = (t.detach() for t in per_sample_derivatives(log_density, x))
    rows = x.repeat(N_PARTICLES, 1)
    with torch.no_grad():
        _, draws = cp_hessian_diagonal(log_density, rows, n_particles=1, generator=torch.Generator().manual_seed(seed))
    draws = draws.reshape(N_PARTICLES, *x.shape)
    std_error = draws.std(dim=0) / math.sqrt(N_PARTICLES)
    assert bool((std_error > 0).all())
    assert bool(((draws.mean(dim=0) - h.diagonal(dim1=1, dim2=2)).abs() <= Z * std_error).all())


def test_nice_scores_of_both_sweeps_are_exact():
    assert_sweep_scores_exact(tiny_nice(), torch.randn(4, 6, dtype=F64, generator=torch.Generator().manual_seed(12)), 13)


def test_nice_cp_hessian_diagonal_unbiased():
    model = tiny_nice(seed=1)
    assert_cp_diagonal_unbiased(model, torch.randn(4, 6, dtype=F64, generator=torch.Generator().manual_seed(14)), 15)


def test_nice_cp_loss_and_parameter_gradients_unbiased():
    model = tiny_nice(seed=2)
    assert_cp_unbiased(model, model, torch.randn(3, 6, dtype=F64, generator=torch.Generator().manual_seed(16)), 17)


def test_nice_approx_bp_matches_the_written_out_recursion_and_is_biased():
    model = tiny_nice(seed=3)
    x = torch.randn(4, 6, dtype=F64, generator=torch.Generator().manual_seed(18))
    want_g, want_d = approx_bp_reference(model, x)
    score, diag = approx_bp_hessian_diagonal(model, x)
    torch.testing.assert_close(score, want_g, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(diag, want_d, rtol=1e-12, atol=1e-14)
    g, h = per_sample_derivatives(model, x)
    torch.testing.assert_close(want_g, g, rtol=1e-12, atol=1e-14)  # the reference's forward is NICE's
    assert (diag - h.diagonal(dim1=1, dim2=2)).abs().max() > 1e-3


def test_nice_approx_bp_exact_only_for_one_coupling_of_width_one():
    x = torch.randn(4, 6, dtype=F64, generator=torch.Generator().manual_seed(19))
    # One coupling: the prior's Hessian −diag(e^{2s}) has no kept/update cross terms. Width 1: the
    # net's hidden Hessians are 1×1, so no off-diagonal curvature is dropped there either.
    model = tiny_nice(n_couplings=1, hidden=1, depth=2, seed=4)
    assert_approx_bp_exact(model, model, model, x)
    # One hidden layer is not enough (unlike for an MLP log-density): the prior's curvature, sent
    # back through the out_layer, is not diagonal over the hidden units; nor is width 1 with two
    # couplings, whose second (in the sweep) sees the first's kept/update cross curvature.
    for wider in (tiny_nice(n_couplings=1, hidden=5, depth=1, seed=4), tiny_nice(n_couplings=2, hidden=1, seed=4)):
        _, h = per_sample_derivatives(wider, x)
        _, diag = approx_bp_hessian_diagonal(wider, x)
        assert (diag - h.diagonal(dim1=1, dim2=2)).abs().max() > 1e-5  # vs ~1e-16 when exact


# --- Annealed (NCSN) losses -------------------------------------------------------------------


def linear_conditional_score(scales: torch.Tensor):
    """s(x, label) = −c_label x: a mismatched score, so the noise matters."""
    return lambda x, labels: -scales[labels].reshape(-1, *([1] * (x.dim() - 1))) * x


@pytest.mark.parametrize("anneal_power", [2.0, 1.0])
def test_annealed_dsm_per_sample_reference(anneal_power):
    sigmas = geometric_sigmas(1.0, 0.1, 4).to(F64)
    scales = torch.tensor([0.5, 2.0, 7.0, 30.0], dtype=F64)
    x = torch.randn(6, 2, 3, dtype=F64)
    noise = torch.randn(6, 2, 3, dtype=F64)
    labels = torch.tensor([0, 3, 1, 2, 2, 0])
    loss = annealed_dsm(linear_conditional_score(scales), x, sigmas, labels, anneal_power, noise=noise)
    expected = []
    for b in range(6):
        sigma, c = sigmas[labels[b]].item(), scales[labels[b]].item()
        x_noisy = x[b].numpy() + sigma * noise[b].numpy()
        residual = -c * x_noisy + (x_noisy - x[b].numpy()) / sigma**2
        expected.append(sigma**anneal_power * 0.5 * (residual**2).sum())
    assert loss.item() == pytest.approx(np.mean(expected), rel=1e-12)


@pytest.mark.parametrize("projection", ["rademacher", "sphere"])
def test_annealed_ssm_vr_per_sample_reference(projection):
    # With s = −c x, vᵀ(∂s/∂x)v = −c‖v‖² = −c·D exactly for these projections.
    sigmas = geometric_sigmas(1.0, 0.1, 3).to(F64)
    scales = torch.tensor([0.3, 1.5, 9.0], dtype=F64)
    x = torch.randn(5, 4, dtype=F64)
    noise = torch.randn(5, 4, dtype=F64)
    labels = torch.tensor([2, 0, 1, 1, 2])
    score_fn = linear_conditional_score(scales)
    loss = annealed_ssm_vr(score_fn, x, sigmas, labels, n_particles=3, projection=projection, noise=noise)
    expected = []
    for b in range(5):
        sigma, c = sigmas[labels[b]].item(), scales[labels[b]].item()
        x_noisy = x[b].numpy() + sigma * noise[b].numpy()
        expected.append(sigma**2 * (0.5 * c**2 * (x_noisy**2).sum() - c * 4))
    assert loss.item() == pytest.approx(np.mean(expected), rel=1e-12)


def test_annealed_losses_sample_labels_and_are_differentiable():
    sigmas = geometric_sigmas(1.0, 0.01, 5)
    scale = nn.Parameter(torch.ones(5))
    score_fn = lambda x, labels: -scale[labels].unsqueeze(1) * x  # noqa: E731
    x = torch.randn(16, 3)
    for loss_fn in (annealed_dsm, annealed_ssm_vr):
        loss = loss_fn(score_fn, x, sigmas, generator=torch.Generator().manual_seed(0))
        (grad,) = torch.autograd.grad(loss, scale)
        assert loss.dim() == 0 and bool(torch.isfinite(grad).all()) and grad.abs().sum() > 0


def test_registry_calls_every_loss_with_keyword_arguments():
    assert set(LOSSES.names()) >= {"sm", "ssm", "ssm_vr", "dsm", "cp", "approx_bp", "anneal_dsm", "anneal_ssm_vr"}
    net = mlp()
    score_fn = score_from_log_density(energy(net))
    x = torch.randn(4, 5, dtype=F64)
    sigmas = geometric_sigmas(1.0, 0.1, 3).to(F64)
    conditional = lambda z, labels: score_fn(z) / sigmas[labels].unsqueeze(1)  # noqa: E731
    calls = {
        "sm": (score_fn, dict(trace="loop")),
        "ssm": (score_fn, dict(n_particles=2, projection="gaussian")),
        "ssm_vr": (score_fn, dict(n_particles=2, projection="sphere")),
        "dsm": (score_fn, dict(sigma=0.1)),
        "cp": (net, dict(n_particles=2)),
        "approx_bp": (net, {}),
        "anneal_dsm": (conditional, dict(sigmas=sigmas, anneal_power=2.0)),
        "anneal_ssm_vr": (conditional, dict(sigmas=sigmas, n_particles=2, projection="rademacher")),
    }
    for name, (fn, kwargs) in calls.items():
        loss = LOSSES.get(name)(fn, x, **kwargs)
        assert loss.dim() == 0 and param_grads(loss, net)[0].abs().sum() > 0, name
    with pytest.raises(ValueError, match="valid"):
        LOSSES.get("nope")


def test_bad_input_errors():
    score_fn = lambda x: -x  # noqa: E731
    x = torch.randn(3, 4)
    sigmas = torch.tensor([1.0, 0.5])
    with pytest.raises(ValueError, match=r"'uniform'.*rademacher"):
        sliced_score_matching(score_fn, x, projection="uniform")
    with pytest.raises(ValueError, match=r"'cauchy'.*sphere"):
        sliced_score_matching_vr(score_fn, x, projection="cauchy")
    with pytest.raises(ValueError, match=r"'cauchy'.*gaussian"):
        annealed_ssm_vr(lambda z, l: -z, x, sigmas, projection="cauchy")
    for bad in (0, -1.0, float("nan")):
        with pytest.raises(ValueError, match="sigma must be"):
            denoising_score_matching(score_fn, x, sigma=bad)
    with pytest.raises(ValueError, match="sigmas must all be finite and > 0"):
        annealed_dsm(lambda z, l: -z, x, torch.tensor([1.0, 0.0]))
    for bad in (0, -2, 1.5, True):
        with pytest.raises(ValueError, match=f"n_particles must be an int >= 1, got {bad!r}"):
            sliced_score_matching(score_fn, x, n_particles=bad)
        with pytest.raises(ValueError, match="n_particles"):
            sliced_score_matching_vr(score_fn, x, n_particles=bad)
        with pytest.raises(ValueError, match="n_particles"):
            curvature_propagation(mlp(d=4), x.double(), n_particles=bad)
        with pytest.raises(ValueError, match="n_particles"):
            annealed_ssm_vr(lambda z, l: -z, x, sigmas, n_particles=bad)
    with pytest.raises(ValueError, match=r"'exact'.*batched.*loop"):
        exact_score_matching(score_fn, x, trace="exact")
    with pytest.raises(ValueError, match="chunk_size must be an int >= 1, got 0"):
        exact_score_matching(score_fn, x, chunk_size=0)
    with pytest.raises(TypeError, match="needs a score function"):
        hessian_trace(score_fn(x.requires_grad_()), x, method="forward")
    with pytest.raises(ValueError, match=r"labels must index sigmas.*\[0, 2\)"):
        annealed_dsm(lambda z, l: -z, x, sigmas, labels=torch.tensor([0, 1, 2]))
    with pytest.raises(TypeError, match="nn.Sequential"):
        curvature_propagation(energy(mlp(d=4)), x.double())
    with pytest.raises(TypeError, match=r"unsupported layer ReLU.*Softplus"):
        approx_backprop_score_matching(nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 1)), x)
    with pytest.raises(ValueError, match=r"shape \(N, 1\)"):
        approx_backprop_score_matching(nn.Sequential(nn.Linear(4, 3), nn.Softplus()), x)
