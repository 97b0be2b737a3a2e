"""DKEF, NICE and MLPStack against independent float64 references (closed forms, autograd.functional)."""
from __future__ import annotations

import math
import statistics

import pytest
import torch
from torch import nn
from torch.autograd.functional import hessian, jacobian

from score_matching.models import MODELS
from score_matching.models.dkef import DKEF, split_batch_loss
from score_matching.models.dkef_normaliser import (
    DefensiveGaussianProposal,
    DefensiveKDEProposal,
    log_normaliser_importance_sampling,
    mean_log_likelihood,
)
from score_matching.models.mlp import MLP, MLPStack, Softplus
from score_matching.models.nice import NICE


def _softplus(t: torch.Tensor) -> torch.Tensor:
    return torch.log1p(torch.exp(t))


def _explicit_features(net: MLP, x: torch.Tensor) -> torch.Tensor:
    """φ(x) from the raw weights: softplus layers (in_layer, then the stack's Linears), a linear readout."""
    linears = [net.in_layer[0]] + [m for m in net.stack.layers if isinstance(m, nn.Linear)]
    h = x
    for linear in linears:
        h = _softplus(h @ linear.weight.T + linear.bias)
    return h @ net.out_layer.weight.T + net.out_layer.bias


def _explicit_log_density(model: DKEF, x: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    """log p̃(x) = Σ_m α_m Σ_r ρ_r exp(−‖φ_r(x) − φ_r(z_m)‖² / 2σ_r²) + log N(x; 0, 4I), written out."""
    logits = model.kernel_logits
    rho = torch.exp(logits) / torch.exp(logits).sum()
    variances = torch.exp(model.log_bandwidths) ** 2
    kernel = 0
    for r, net in enumerate(model.features):
        diff = _explicit_features(net, x)[:, None, :] - _explicit_features(net, model.inducing_points)[None]
        kernel = kernel + rho[r] * torch.exp(-(diff**2).sum(-1) / (2 * variances[r]))
    d = x.shape[1]
    log_q0 = -(x**2).sum(-1) / (2 * 4.0) - 0.5 * d * math.log(2 * math.pi * 4.0)
    return kernel @ alpha + log_q0


def _small_dkef(d: int, m: int, seed: int, **kwargs) -> tuple[DKEF, torch.Tensor]:
    torch.manual_seed(seed)
    model = DKEF(d, n_inducing=m, n_kernels=2, hidden=5, latent=3, init_bandwidths=(0.9, 1.6), **kwargs).double()
    with torch.no_grad():
        model.kernel_logits.copy_(torch.tensor([0.3, -0.4]))
    data = torch.randn(40, d, dtype=torch.float64)
    model.init_inducing_points(data, torch.Generator().manual_seed(seed))
    return model, data


def _exact_sm_loss(score_fn, x: torch.Tensor) -> torch.Tensor:
    """mean ½‖s(x)‖² + tr ∇s(x), the trace by one autograd pass per dimension."""
    x = x.detach().requires_grad_(True)
    s = score_fn(x)
    trace = sum(torch.autograd.grad(s[:, j].sum(), x, create_graph=True)[0][:, j] for j in range(x.shape[1]))
    return (0.5 * s.pow(2).sum(-1) + trace).mean()


# ---------------------------------------------------------------- MLPStack / naming


def test_mlp_stack_layout_and_slicing() -> None:
    stack = MLPStack(4, 6, n_layers=3)
    assert isinstance(stack.layers, nn.Sequential) and len(stack.layers) == 6
    assert [type(m) for m in stack.layers] == [nn.Linear, Softplus] * 3
    assert stack.layers[0].in_features == 4 and stack.layers[4].in_features == 6
    assert stack(torch.randn(2, 4)).shape == (2, 6)
    assert isinstance(stack.layers[2:4], nn.Sequential)
    x = torch.randn(3, 6)
    assert torch.equal(MLPStack(6, 6, n_layers=0)(x), x)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(in_features=4, hidden=6, n_layers=1, activation="relu"), "unknown activation 'relu'"),
        (dict(in_features=4, hidden=6, n_layers=0), "must equal hidden"),
        (dict(in_features=4, hidden=6, n_layers=-1), "n_layers must be an int >= 0, got -1"),
    ],
)
def test_mlp_stack_rejects_bad_arguments(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        MLPStack(**kwargs)


def test_swappable_stacks_are_addressable() -> None:
    dkef = DKEF(15)
    names = {name for name, module in dkef.named_modules() if isinstance(module, MLPStack)}
    assert names == {"features.0.stack", "features.1.stack", "features.2.stack"}
    assert dkef.get_submodule("features.0.stack")(torch.randn(2, 30)).shape == (2, 30)
    nice = NICE()
    names = {name for name, module in nice.named_modules() if isinstance(module, MLPStack)}
    assert names == {f"couplings.{k}.net.stack" for k in range(4)}
    assert nice.get_submodule("couplings.0.net.stack")(torch.randn(2, 1000)).shape == (2, 1000)
    # The paper's Table 4 reports 15M parameters for the MNIST NICE.
    assert 15.0e6 < sum(p.numel() for p in nice.parameters()) < 15.3e6


def test_models_are_registered() -> None:
    assert MODELS.get("dkef") is DKEF and MODELS.get("nice") is NICE


# ---------------------------------------------------------------- DKEF


def test_dkef_log_density_matches_explicit_formula() -> None:
    model, data = _small_dkef(3, 5, seed=0, depth=3)
    x = data[:7]
    alpha = torch.randn(5, dtype=torch.float64)
    expected = _explicit_log_density(model, x, alpha)
    torch.testing.assert_close(model(x, alpha), expected, rtol=1e-12, atol=1e-12)
    with torch.no_grad():
        model.alpha.copy_(alpha)
    torch.testing.assert_close(model(x), expected, rtol=1e-12, atol=1e-12)
    expected_score = jacobian(lambda v: _explicit_log_density(model, v, alpha).sum(), x)
    torch.testing.assert_close(model.score(x), expected_score, rtol=1e-10, atol=1e-12)


def test_fit_alpha_and_finalize_minimise_the_exact_sm_loss() -> None:
    model, data = _small_dkef(2, 3, seed=1)
    with torch.no_grad():
        model.log10_lambda.fill_(-1.5)
    x_fit = data[:6]

    def objective(alpha: torch.Tensor) -> torch.Tensor:
        total = 0
        for x_n in x_fit:
            log_p = lambda v: _explicit_log_density(model, v[None], alpha)[0]  # noqa: E731
            grad = jacobian(log_p, x_n, create_graph=True)
            hess = hessian(log_p, x_n, create_graph=True)
            total = total + 0.5 * grad.pow(2).sum() + torch.diagonal(hess).sum()
        return total / len(x_fit) + 0.5 * 10**-1.5 * alpha.pow(2).sum()

    start = torch.zeros(3, dtype=torch.float64)
    curvature = hessian(objective, start)
    assert torch.linalg.eigvalsh(curvature).min() > 0
    reference = start - torch.linalg.solve(curvature, jacobian(objective, start))

    torch.testing.assert_close(model.fit_alpha(x_fit), reference, rtol=1e-9, atol=1e-10)
    finalized = model.finalize(x_fit, chunk_size=4)
    torch.testing.assert_close(finalized, reference, rtol=1e-9, atol=1e-10)
    torch.testing.assert_close(model.alpha, reference, rtol=1e-9, atol=1e-10)
    assert not finalized.requires_grad


def test_split_batch_loss_reaches_every_parameter() -> None:
    model, data = _small_dkef(3, 4, seed=2, depth=3)
    x = data[:10]
    loss = split_batch_loss(model, x, _exact_sm_loss)
    loss.backward()
    for name, parameter in model.named_parameters():
        assert parameter.grad is not None, name
        assert torch.isfinite(parameter.grad).all() and parameter.grad.abs().sum() > 0, name

    # d loss / d log10_lambda by central differences, all in float64.
    step = 1e-5
    with torch.no_grad():
        values = []
        for sign in (1, -1):
            model.log10_lambda += sign * step
            with torch.enable_grad():
                values.append(split_batch_loss(model, x, _exact_sm_loss).item())
            model.log10_lambda -= sign * step
    assert model.log10_lambda.grad.item() == pytest.approx((values[0] - values[1]) / (2 * step), rel=1e-5)


@pytest.mark.parametrize("stack_init", ["he", "torch"])
def test_sixteen_layer_dkef_trains_only_with_he_stack_init(stack_init: str) -> None:
    """The paper's 16-layer DKEF (depth 15): nn.Linear's default init makes its features constant."""
    torch.manual_seed(0)
    data = torch.randn(240, 15)
    model = DKEF(15, n_inducing=200, depth=15, stack_init=stack_init)
    model.init_inducing_points(data)
    weights = [m.weight for m in model.features.modules() if isinstance(m, nn.Linear) and m.in_features == 30]
    stack = torch.cat([w.flatten() for w in weights[:-3]])  # the stacks' 3 x 14 Linear(30, 30); not out_layer
    features = model.features[0](data)
    spread = (features - features.mean(0)).norm(dim=1).mean().item()
    split_batch_loss(model, data[:32], _exact_sm_loss).backward()
    grad_norm = torch.cat([p.grad.flatten() for p in model.parameters()]).norm().item()
    if stack_init == "he":
        assert stack.std().item() == pytest.approx(math.sqrt(2 / 30), rel=0.05)
        assert spread > 1e-2 and grad_norm > 1e-2
    else:
        assert spread < 1e-4 and grad_norm < 1e-5


def test_unknown_stack_init_lists_the_choices() -> None:
    with pytest.raises(ValueError, match=r"'xavier'.*\['torch', 'he'\]"):
        MLPStack(3, 3, 2, init="xavier")


def test_importance_sampling_is_exact_for_alpha_zero() -> None:
    torch.manual_seed(3)
    model = DKEF(4, n_inducing=6, hidden=5, latent=3)
    model.init_inducing_points(torch.randn(20, 4))
    log_z, std_error, drawn = log_normaliser_importance_sampling(model, 1000, 300, torch.Generator().manual_seed(0))
    assert log_z == 0.0 and std_error == 0.0 and drawn == 1000
    x = torch.randn(9, 4, dtype=torch.float64)
    expected = (-(x**2).sum(-1) / 8 - 2 * math.log(8 * math.pi)).mean().item()
    assert mean_log_likelihood(model.double(), x, 0.0, chunk=4) == pytest.approx(expected, rel=1e-12)


def _linear_dkef(sigma: float, alpha: float) -> tuple[DKEF, torch.Tensor, float]:
    """A 2-D DKEF with linear features φ(x) = Wx + c, its inducing point z, and log Z in closed form.

    Linear features make Z = E_q0[exp(α k(x, z))] a fast series of Gaussian integrals: with
    y = W(x − z) ~ N(μ = −Wz, Σ = 4WWᵀ) under q0 and
    E[exp(−a‖y‖²/2)] = det(I + aΣ)^(−1/2) exp(−a/2 μᵀ(I + aΣ)⁻¹μ), expand exp(α k) in powers of k.
    """
    model = DKEF(2, n_inducing=1, n_kernels=1, init_bandwidths=(sigma,)).double()
    weight = torch.tensor([[0.8, -0.3], [0.2, 0.5]], dtype=torch.float64)
    linear = nn.Linear(2, 2).double()
    with torch.no_grad():
        linear.weight.copy_(weight)
        linear.bias.copy_(torch.tensor([0.1, -0.2]))
        model.alpha.fill_(alpha)
    model.features[0] = linear
    z = torch.tensor([[0.5, -0.3]], dtype=torch.float64)
    model.init_inducing_points(z)
    mu, cov = -(weight @ z[0]), 4.0 * weight @ weight.T
    z_series = 1.0
    for j in range(1, 150):
        a = j / sigma**2
        shifted = torch.eye(2, dtype=torch.float64) + a * cov
        gaussian = torch.det(shifted) ** -0.5 * torch.exp(-0.5 * a * mu @ torch.linalg.solve(shifted, mu))
        z_series += alpha**j / math.factorial(j) * gaussian.item()
    return model, z, math.log(z_series)


def test_importance_sampling_matches_closed_form() -> None:
    """log Z of a linear-feature DKEF (`_linear_dkef`'s series) from q0 and from a defensive KDE proposal."""
    model, z, log_z_true = _linear_dkef(sigma=1.3, alpha=1.2)

    log_z, std_error, drawn = log_normaliser_importance_sampling(model, 200_000, 50_000, torch.Generator().manual_seed(0))
    assert 0 < std_error < 0.01 and drawn == 200_000
    assert abs(log_z - log_z_true) < 3 * std_error

    # Adaptive: rounds of 1000 samples until the standard error is at most 0.004 (se ∝ 1/√n).
    first = log_normaliser_importance_sampling(model, 1000, 1000, torch.Generator().manual_seed(1))
    log_z, std_error, drawn = log_normaliser_importance_sampling(
        model, 1000, 1000, torch.Generator().manual_seed(1), target_std_error=0.004
    )
    assert first[1] > 0.004 >= std_error and drawn % 1000 == 0
    assert drawn == pytest.approx(1000 * (first[1] / 0.004) ** 2, rel=0.5)
    assert abs(log_z - log_z_true) < 3 * std_error
    capped = log_normaliser_importance_sampling(
        model, 1000, 1000, torch.Generator().manual_seed(1), target_std_error=1e-6, max_samples=3500
    )
    assert capped[2] == 3000 and capped[1] > 1e-6

    # Each defensive proposal is another unbiased route to the same Z.
    rows = z + torch.randn(50, 2, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    for proposal in (DefensiveKDEProposal(rows, q0_std=model.q0_std), DefensiveGaussianProposal(rows, q0_std=model.q0_std)):
        log_z, std_error, drawn = log_normaliser_importance_sampling(
            model, 200_000, 50_000, torch.Generator().manual_seed(0), proposal=proposal
        )
        assert 0 < std_error < 0.01 and drawn == 200_000
        assert abs(log_z - log_z_true) < 3 * std_error


@pytest.mark.parametrize("proposal_class", [DefensiveKDEProposal, DefensiveGaussianProposal])
def test_defensive_proposals_beat_q0_on_a_concentrated_density(proposal_class) -> None:
    """α = 12, σ = 0.2: p̃ = q0·exp(α k) puts most of its mass in a small bump around z, which q0 rarely hits."""
    model, z, log_z_true = _linear_dkef(sigma=0.2, alpha=12.0)
    centres = z + 0.1 * torch.randn(100, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    proposal = proposal_class(centres, q0_std=model.q0_std)
    q0 = log_normaliser_importance_sampling(model, 100_000, 50_000, torch.Generator().manual_seed(1))
    kde = log_normaliser_importance_sampling(model, 100_000, 50_000, torch.Generator().manual_seed(1), proposal=proposal)
    assert q0[2] == kde[2] == 100_000
    assert kde[1] * 5 < q0[1]
    assert abs(q0[0] - log_z_true) < 3 * q0[1]
    assert abs(kde[0] - log_z_true) < 3 * kde[1]


def test_defensive_kde_log_prob_is_the_mixture_density() -> None:
    centres = torch.tensor([[1.0, 2.0, 0.0], [-1.0, 0.5, 0.3], [3.0, -1.0, 1.0], [0.2, 0.2, -2.0]], dtype=torch.float64)
    q0_std, w0, h = 1.5, 0.3, 0.4
    proposal = DefensiveKDEProposal(centres, q0_std=q0_std, q0_weight=w0, bandwidth=h)
    locs = torch.cat([torch.zeros(1, 3, dtype=torch.float64), centres])
    scales = torch.tensor([q0_std] + [h] * 4, dtype=torch.float64)[:, None].expand(5, 3)
    weights = torch.tensor([w0] + [(1 - w0) / 4] * 4, dtype=torch.float64)
    mixture = torch.distributions.MixtureSameFamily(
        torch.distributions.Categorical(probs=weights),
        torch.distributions.Independent(torch.distributions.Normal(locs, scales), 1),
    )
    x = torch.tensor([[0.0, 0.0, 0.0], [1.1, 1.9, 0.1], [-0.7, 0.4, 0.2], [8.0, -9.0, 7.0], [2.5, -0.5, 1.5]], dtype=torch.float64)
    expected = mixture.log_prob(x)
    assert torch.allclose(proposal.log_prob(x), expected, rtol=0, atol=1e-10)
    assert torch.allclose(proposal.log_prob(x, max_pairs=5), expected, rtol=0, atol=1e-10)  # one row per chunk
    assert torch.allclose(proposal.log_prob(x.float()), expected, rtol=0, atol=1e-5)
    q0_only = DefensiveKDEProposal(centres, q0_std=q0_std, q0_weight=1.0, bandwidth=h).log_prob(x)
    q0_reference = torch.distributions.Independent(torch.distributions.Normal(torch.zeros(3, dtype=torch.float64), q0_std), 1)
    assert torch.allclose(q0_only, q0_reference.log_prob(x), rtol=0, atol=1e-10)
    # Scott's rule: N^(-1/(d+4)) times the mean over dimensions of the centres' (sample) standard deviation.
    scott = 4 ** (-1 / 7) * sum(statistics.stdev(column) for column in centres.T.tolist()) / 3
    assert DefensiveKDEProposal(centres, q0_std=q0_std).bandwidth == pytest.approx(scott, rel=1e-12)


def test_defensive_kde_samples_have_the_mixture_moments() -> None:
    centres = torch.tensor([[1.0, 2.0], [-1.0, 0.5], [3.0, -1.0]], dtype=torch.float64)
    q0_std, w0, h, n = 1.5, 0.3, 0.4, 200_000
    proposal = DefensiveKDEProposal(centres, q0_std=q0_std, q0_weight=w0, bandwidth=h)
    x = proposal.sample(n, torch.Generator().manual_seed(0))
    assert x.shape == (n, 2) and x.dtype == torch.float64
    # Mixture moments: E[x] = (1 − w0) mean(c); E[xxᵀ] = w0 s² I + (1 − w0) (h² I + mean(c cᵀ)).
    mean = (1 - w0) * centres.mean(0)
    second = w0 * q0_std**2 * torch.eye(2, dtype=torch.float64) + (1 - w0) * (
        h**2 * torch.eye(2, dtype=torch.float64) + centres.T @ centres / 3
    )
    cov = second - torch.outer(mean, mean)
    assert ((x.mean(0) - mean).abs() < 5 * (cov.diagonal() / n).sqrt()).all()
    centred = x - x.mean(0)
    products = centred[:, :, None] * centred[:, None, :]
    standard_error = products.std(0) / math.sqrt(n)
    assert ((products.mean(0) - cov).abs() < 5 * standard_error).all()


def test_defensive_gaussian_log_prob_and_samples_are_the_mixture() -> None:
    rows = torch.randn(400, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    rows = rows @ torch.tensor([[1.0, 0.0, 0.0], [0.6, 0.8, 0.0], [-0.3, 0.2, 0.5]], dtype=torch.float64).T + 2.0
    q0_std, w0, n = 1.5, 0.3, 200_000
    proposal = DefensiveGaussianProposal(rows, q0_std=q0_std, q0_weight=w0)
    mean = rows.mean(0)
    centred = rows - mean
    covariance = centred.T @ centred / (len(rows) - 1)
    fitted = torch.distributions.MultivariateNormal(mean, covariance_matrix=covariance)
    q0 = torch.distributions.Independent(torch.distributions.Normal(torch.zeros(3, dtype=torch.float64), q0_std), 1)
    x = torch.tensor([[0.0, 0.0, 0.0], [2.0, 2.5, 1.9], [8.0, -9.0, 7.0]], dtype=torch.float64)
    expected = torch.logaddexp(math.log(w0) + q0.log_prob(x), math.log(1 - w0) + fitted.log_prob(x))
    assert torch.allclose(proposal.log_prob(x), expected, rtol=0, atol=1e-10)
    assert torch.allclose(proposal.log_prob(x.float()), expected, rtol=0, atol=1e-5)
    draws = proposal.sample(n, torch.Generator().manual_seed(1))
    assert draws.shape == (n, 3) and draws.dtype == torch.float64
    # Mixture moments: E[x] = (1 − w0) μ; Cov[x] = w0 s² I + (1 − w0)(Σ + μμᵀ) − E[x]E[x]ᵀ.
    first = (1 - w0) * mean
    cov = w0 * q0_std**2 * torch.eye(3, dtype=torch.float64) + (1 - w0) * (covariance + torch.outer(mean, mean))
    cov = cov - torch.outer(first, first)
    assert ((draws.mean(0) - first).abs() < 5 * (cov.diagonal() / n).sqrt()).all()
    products = (draws - draws.mean(0))[:, :, None] * (draws - draws.mean(0))[:, None, :]
    assert ((products.mean(0) - cov).abs() < 5 * products.std(0) / math.sqrt(n)).all()


@pytest.mark.parametrize(
    "rows, message",
    [
        (torch.zeros(3, 3), r"more rows than columns to fit a covariance, got shape \(3, 3\)"),
        (torch.ones(10, 2), r"covariance of the 10 rows is not positive definite"),
        (torch.tensor([[0.0, math.nan], [1.0, 2.0], [3.0, 1.0]]), r"rows must be finite"),
        (torch.zeros(5), r"rows must be a tensor of shape \(N >= 2, d >= 1\), got \(5,\)"),
    ],
)
def test_defensive_gaussian_proposal_rejects_bad_rows(rows: torch.Tensor, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        DefensiveGaussianProposal(rows, q0_std=2.0)


def test_importance_sampling_rejects_non_finite_log_weights() -> None:
    model, z, _ = _linear_dkef(sigma=1.3, alpha=1.2)
    expansion = model.kernel_expansion

    def nan_for_some_rows(x: torch.Tensor, alpha: torch.Tensor | None = None) -> torch.Tensor:
        values = expansion(x, alpha)
        return torch.where(x[:, 0] > 2.0, torch.full_like(values, math.nan), values)

    model.kernel_expansion = nan_for_some_rows
    with pytest.raises(RuntimeError, match=r"[1-9]\d* of 1000 importance samples have a non-finite log-weight.*e\.g\. nan"):
        log_normaliser_importance_sampling(model, 1000, 300, torch.Generator().manual_seed(0))
    model.kernel_expansion = lambda x, alpha=None: torch.where(x[:, 1] > 0, math.inf, expansion(x, alpha))
    proposal = DefensiveKDEProposal(z + torch.randn(10, 2, dtype=torch.float64), q0_std=model.q0_std)
    with pytest.raises(RuntimeError, match=r"of 1000 importance samples .*DefensiveKDEProposal.*e\.g\. inf"):
        log_normaliser_importance_sampling(model, 1000, 300, torch.Generator().manual_seed(0), proposal=proposal)


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda c: DefensiveKDEProposal(c, q0_std=2.0, q0_weight=0.0), r"q0_weight must be in \(0, 1\].*got 0\.0"),
        (lambda c: DefensiveKDEProposal(c, q0_std=2.0, q0_weight=1.5), r"q0_weight must be in \(0, 1\].*got 1\.5"),
        (lambda c: DefensiveKDEProposal(c, q0_std=2.0, bandwidth=0.0), r"bandwidth must be a finite number > 0.*got 0\.0"),
        (lambda c: DefensiveKDEProposal(c, q0_std=2.0, bandwidth=-1.0), r"bandwidth must be .*> 0.*got -1\.0"),
        (lambda c: DefensiveKDEProposal(c, q0_std=0.0), r"q0_std must be a finite number > 0, got 0\.0"),
        (lambda c: DefensiveKDEProposal(c[0], q0_std=2.0), r"shape \(N >= 1, d >= 1\), got \(2,\)"),
        (lambda c: DefensiveKDEProposal(c[:0], q0_std=2.0), r"shape \(N >= 1, d >= 1\), got \(0, 2\)"),
        (lambda c: DefensiveKDEProposal(c[:1], q0_std=2.0), r"Scott's rule gives bandwidth 0\.0 for 1 centre"),
        (lambda c: DefensiveKDEProposal(c, q0_std=2.0).log_prob(torch.zeros(4, 3)), r"x must have shape \(n, 2\), got \(4, 3\)"),
        (
            lambda c: log_normaliser_importance_sampling(
                DKEF(3, n_inducing=1), 100, proposal=DefensiveKDEProposal(c, q0_std=2.0)
            ),
            "the proposal has dimension 2, the model 3",
        ),
    ],
)
def test_defensive_kde_proposal_rejects_bad_arguments(make, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        make(torch.tensor([[0.0, 1.0], [2.0, -1.0], [0.5, 0.5]]))


@pytest.mark.parametrize(
    "call, error, message",
    [
        (lambda m: m(torch.randn(3, 4)), RuntimeError, "init_inducing_points"),
        (lambda m: m.init_inducing_points(torch.randn(3, 4)), ValueError, "at least n_inducing=5 rows"),
        (lambda m: m.init_inducing_points(torch.randn(9, 2)), ValueError, r"shape \(batch >= 1, 4\), got \(9, 2\)"),
        (lambda m: split_batch_loss(m, torch.randn(1, 4), _exact_sm_loss), ValueError, "batch >= 2"),
    ],
)
def test_dkef_rejects_bad_input(call, error: type, message: str) -> None:
    with pytest.raises(error, match=message):
        call(DKEF(4, n_inducing=5))


def test_dkef_rejects_bad_configuration_and_alpha() -> None:
    with pytest.raises(ValueError, match="init_bandwidths must be 2 positive numbers"):
        DKEF(4, n_kernels=2)
    with pytest.raises(ValueError, match="q0_std must be > 0"):
        DKEF(4, q0_std=0.0)
    model = DKEF(4, n_inducing=5)
    model.init_inducing_points(torch.randn(5, 4))
    with pytest.raises(ValueError, match=r"alpha must have shape \(5,\), got \(4,\)"):
        model(torch.randn(2, 4), torch.zeros(4))


# ---------------------------------------------------------------- NICE


@pytest.mark.parametrize("features", [6, 7])
def test_nice_is_invertible(features: int) -> None:
    torch.manual_seed(4)
    model = NICE(features, hidden=8, depth=3).double()
    with torch.no_grad():
        model.log_scale.normal_()
    x = torch.randn(5, features, dtype=torch.float64)
    z = model.transform(x)
    assert (z - x).abs().max() > 0.1
    torch.testing.assert_close(model.inverse(z), x, rtol=0, atol=1e-12)
    torch.testing.assert_close(model.transform(model.inverse(x)), x, rtol=0, atol=1e-12)


def test_nice_log_likelihood_is_the_change_of_variables() -> None:
    torch.manual_seed(5)
    model = NICE(6, hidden=8, depth=3).double()
    with torch.no_grad():
        model.log_scale.normal_(std=0.5)
    x = torch.randn(4, 6, dtype=torch.float64)
    expected = []
    for x_n in x:
        jac = jacobian(lambda v: model.transform(v[None])[0], x_n)
        z_n = model.transform(x_n[None])[0]
        log_prior = -0.5 * (z_n**2).sum() - 3 * math.log(2 * math.pi)
        expected.append(log_prior + torch.linalg.slogdet(jac).logabsdet)
    torch.testing.assert_close(model(x), torch.stack(expected), rtol=1e-12, atol=1e-12)


def test_nice_couplings_alternate_parity() -> None:
    model = NICE(6, hidden=8, depth=2).double()
    x = torch.randn(3, 6, dtype=torch.float64)
    for k, coupling in enumerate(model.couplings):
        kept = slice(k % 2, None, 2)
        assert torch.equal(coupling(x)[:, kept], x[:, kept])


def test_nice_sample_inverts_gaussian_noise() -> None:
    torch.manual_seed(6)
    model = NICE(6, hidden=8, depth=2).double()
    samples = model.sample(5, torch.Generator().manual_seed(7))
    noise = torch.randn(5, 6, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    assert samples.shape == (5, 6) and not samples.requires_grad
    torch.testing.assert_close(model.transform(samples), noise, rtol=0, atol=1e-12)


def test_nice_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match=r"x must have shape \(batch, 6\), got \(2, 5\)"):
        NICE(6, hidden=4)(torch.randn(2, 5))
    with pytest.raises(ValueError, match="in_features must be an int >= 2"):
        NICE(1)


def test_softplus_module_is_softplus_with_its_closed_form_derivatives() -> None:
    from deq_plugin.cells import softplus
    from score_matching.models.mlp import make_activation

    assert isinstance(make_activation("softplus"), Softplus) and isinstance(Softplus(), nn.Softplus)
    # Past ±40, where the linear branch takes over, the value must still be log(1 + eˣ) in float64.
    x = torch.linspace(-60, 60, 2401, dtype=torch.float64, requires_grad=True)
    reference = torch.log1p(torch.exp(-x.abs())) + x.clamp(min=0)  # log(1 + eˣ), overflow-free
    for fn in (Softplus(), softplus):
        y = fn(x)
        torch.testing.assert_close(y, reference, rtol=1e-15, atol=1e-15)
        (first,) = torch.autograd.grad(y.sum(), x, create_graph=True)
        (second,) = torch.autograd.grad(first.sum(), x, create_graph=True)
        (third,) = torch.autograd.grad(second.sum(), x)
        sigmoid = 1 / (1 + torch.exp(-x.detach()))
        torch.testing.assert_close(first, sigmoid, rtol=1e-14, atol=1e-15)
        torch.testing.assert_close(second, sigmoid * (1 - sigmoid), rtol=1e-12, atol=1e-15)
        torch.testing.assert_close(third, sigmoid * (1 - sigmoid) * (1 - 2 * sigmoid), rtol=1e-10, atol=1e-15)


def test_softplus_second_derivatives_are_finite_far_out() -> None:
    """DKEF's α fit takes forward-over-forward derivatives, exact SM reverse-over-reverse ones; a bare
    logaddexp(x, 0) gave NaN for both below x ≈ −88 (float32). In float32 σ(20) rounds to 1, so
    σ(1 − σ) ≈ 2e-9 may come out as 0: hence an absolute tolerance at float32's resolution."""
    from deq_plugin.cells import softplus

    x = torch.tensor([-1000.0, -200.0, -90.0, -50.0, -20.0, 0.0, 20.0, 50.0, 90.0, 1000.0])
    ones = torch.ones_like(x)
    sigmoid = torch.sigmoid(x.double())
    for fn in (Softplus(), softplus):
        first_fn = lambda v: torch.func.jvp(fn, (v,), (ones,))[1]  # noqa: E731
        first, second = torch.func.jvp(first_fn, (x,), (ones,))
        leaf = x.clone().requires_grad_(True)
        (reverse_first,) = torch.autograd.grad(fn(leaf).sum(), leaf, create_graph=True)
        (reverse_second,) = torch.autograd.grad(reverse_first.sum(), leaf)
        for d1, d2 in ((first, second), (reverse_first, reverse_second)):
            assert bool(torch.isfinite(d2).all())
            torch.testing.assert_close(d1.double(), sigmoid, rtol=1e-6, atol=1e-12)
            torch.testing.assert_close(d2.double(), sigmoid * (1 - sigmoid), rtol=1e-5, atol=1e-8)
