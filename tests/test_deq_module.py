"""DEQ module behaviour: solvers, stats, warnings, warm start, normalisation, diagnostics, bad input."""
import logging

import pytest
import torch
from torch import nn
from torch.func import functional_call
from torch.autograd.functional import jacobian

from deq_plugin import DEQ, ConvCell, DenseCell, NonFiniteStateError, contraction_factor, normalize_weight
from deq_plugin.norms import refresh_spectral_norms


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


class SlowTanhCell(nn.Module):
    """f(z, u) = tanh(W z + u), W symmetric with ||W||₂ = 0.97: a slowly contracting cell."""

    def __init__(self, hidden: int) -> None:
        super().__init__()
        a = torch.randn(hidden, hidden, dtype=torch.float64)
        self.register_buffer("W", 0.97 * (a + a.t()) / torch.linalg.matrix_norm(a + a.t(), 2))

    def forward(self, z, u):
        return torch.tanh(z @ self.W.t() + u)


def test_picard_and_anderson_reach_the_same_fixed_point_and_anderson_is_cheaper():
    cell = SlowTanhCell(32)
    u = 0.1 * torch.randn(8, 32, dtype=torch.float64)
    picard = DEQ(cell, solver="picard", tol=1e-10, max_iter=2000)
    anderson = DEQ(cell, solver="anderson", tol=1e-10, max_iter=2000)
    z_p, z_a = picard(u), anderson(u)
    assert picard.stats.converged and anderson.stats.converged
    residual = (cell(z_a, u) - z_a).norm() / z_a.norm()
    assert residual < 1e-9
    assert torch.allclose(z_p, z_a, rtol=1e-7, atol=1e-9)
    assert anderson.stats.n_iter < 0.5 * picard.stats.n_iter


def test_stats_report_residuals_and_non_convergence_is_logged_once(caplog):
    deq = DEQ(SlowTanhCell(16), tol=1e-12, max_iter=3, name="core")
    u = torch.randn(4, 16, dtype=torch.float64)
    with caplog.at_level(logging.WARNING, logger="deq_plugin"):
        z = deq(u)
        deq(u)
    assert deq.stats.converged is False and deq.stats.n_iter == 3
    step = deq.cell(z, u)
    expected_rel = ((step - z).flatten(1).norm(dim=1) / step.flatten(1).norm(dim=1)).max().item()
    assert deq.stats.rel_residual > 1e-12
    assert deq.stats.abs_residual > 0
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 1 and "'core'" in messages[0] and "did not converge" in messages[0]
    assert expected_rel > 0


def test_stats_residual_is_the_per_sample_relative_residual():
    deq = DEQ(SlowTanhCell(16), tol=1e-30, max_iter=1)
    u = torch.randn(4, 16, dtype=torch.float64)
    deq(u)
    first = torch.tanh(u)  # one step from z0 = 0
    rel = (first.norm(dim=1) / first.norm(dim=1)).max().item()
    assert deq.stats.rel_residual == pytest.approx(rel)
    assert deq.stats.abs_residual == pytest.approx(first.norm(dim=1).max().item())


def test_non_finite_state_raises_naming_the_layer():
    deq = DEQ(DenseCell(4), name="feature_core")
    u = torch.randn(2, 4)
    u[1, 2] = float("nan")
    with pytest.raises(NonFiniteStateError, match="feature_core"):
        deq(u)


def test_bad_arguments_are_clear_errors():
    with pytest.raises(ValueError, match="unknown solver 'broyden'.*anderson.*picard"):
        DEQ(DenseCell(4), solver="broyden")
    with pytest.raises(ValueError, match="unknown grad mode 'jfb'.*implicit"):
        DEQ(DenseCell(4), grad="jfb")
    with pytest.raises(ValueError, match="tol"):
        DEQ(DenseCell(4), tol=0)
    deq = DEQ(DenseCell(4))
    with pytest.raises(ValueError, match=r"z0 has shape \(2, 5\)"):
        deq(torch.randn(2, 4), z0=torch.zeros(2, 5))
    with pytest.raises(ValueError, match="batched"):
        deq(torch.randn(4))

    class Shrinking(nn.Module):
        def forward(self, z, u):
            return (z + u)[:, :-1]

    with pytest.raises(ValueError, match=r"cell returned shape \(2, 3\) for a state of shape \(2, 4\)"):
        DEQ(Shrinking(), name="bad")(torch.randn(2, 4))


def test_warm_start_cuts_iterations_and_survives_to_and_state_dict():
    cell = SlowTanhCell(32)
    deq = DEQ(cell, tol=1e-8, max_iter=1000, warm_start=True)
    u = 0.5 * torch.randn(8, 32, dtype=torch.float64)
    deq(u)
    cold = deq.stats.n_iter
    deq(u + 1e-6 * torch.randn_like(u))
    warm = deq.stats.n_iter
    assert warm < cold / 3

    assert not any("warm" in key for key in deq.state_dict())
    deq.to(torch.float32)
    assert deq._warm_z.dtype == torch.float32
    deq.to(torch.float64)
    fresh = DEQ(SlowTanhCell(32), tol=1e-8, max_iter=1000, warm_start=True)
    fresh.load_state_dict(deq.state_dict(), strict=True)
    fresh(u)
    assert fresh.stats.n_iter == cold  # a loaded module starts cold
    deq.reset_warm_start()
    deq(u)
    assert deq.stats.n_iter == cold


def test_warm_start_starts_cold_on_shape_change():
    deq = DEQ(SlowTanhCell(8), tol=1e-8, max_iter=1000, warm_start=True)
    deq(torch.randn(4, 8, dtype=torch.float64))
    u = torch.randn(3, 8, dtype=torch.float64)
    z = deq(u)
    cold = DEQ(SlowTanhCell(8), tol=1e-8, max_iter=1000)
    cold.cell.W.copy_(deq.cell.W)
    assert torch.allclose(z, cold(u))
    assert deq.stats.n_iter == cold.stats.n_iter


def test_frobenius_normalisation_bounds_a_dense_spectral_norm():
    for lam in (1.5, 2.0, 4.0):
        layer = normalize_weight(nn.Linear(20, 20), "frobenius", lam)
        layer.parametrizations.weight.original.data.mul_(100.0)
        assert torch.linalg.matrix_norm(layer.weight.detach(), 2) <= 1 / lam


def conv_operator_norm(conv: nn.Conv2d, shape) -> float:
    """Exact operator norm of a bias-free conv on `shape` inputs, from its dense matrix."""
    x = torch.zeros(1, *shape, dtype=torch.float64)
    weight = conv.weight.detach().to(torch.float64)
    matrix = jacobian(lambda t: nn.functional.conv2d(t, weight, padding=conv.padding), x).reshape(x.numel(), x.numel())
    return torch.linalg.matrix_norm(matrix, 2).item()


def test_spectral_normalisation_bounds_the_conv_operator_where_frobenius_does_not():
    shape, lam = (2, 8, 8), 2.0
    spectral = normalize_weight(nn.Conv2d(2, 2, 3, padding=1, bias=False), "spectral", lam)
    refresh_spectral_norms(spectral, torch.Size((1, *shape)))
    assert conv_operator_norm(spectral, shape) == pytest.approx(1 / lam, rel=1e-3)

    frobenius = normalize_weight(nn.Conv2d(1, 1, 3, padding=1, bias=False), "frobenius", lam)
    frobenius.parametrizations.weight.original.data.fill_(1.0)  # a constant kernel amplifies most
    assert conv_operator_norm(frobenius, (1, 8, 8)) > 2.5 / lam


def test_spectral_estimate_is_checkpointed_and_optional_on_load():
    def conv():
        torch.manual_seed(0)
        return normalize_weight(nn.Conv2d(2, 2, 3, padding=1, bias=False), "spectral", 2.0)

    trained = conv()
    refresh_spectral_norms(trained, torch.Size((1, 2, 8, 8)))
    for _ in range(3):  # training-time refinement moves v away from a fresh 50-step estimate
        refresh_spectral_norms(trained, torch.Size((1, 2, 8, 8)))
    state = trained.state_dict()
    resumed = conv()
    resumed.load_state_dict(state)  # strict
    v = lambda m: m.parametrizations.weight[0].v  # noqa: E731
    assert torch.equal(v(resumed), v(trained)) and torch.equal(resumed.weight, trained.weight)
    legacy = conv()
    legacy.load_state_dict({k: t for k, t in state.items() if not k.endswith(".v")})  # older checkpoints
    assert v(legacy).numel() == 0
    refresh_spectral_norms(legacy, torch.Size((1, 2, 8, 8)), update=False)
    assert conv_operator_norm(legacy, (2, 8, 8)) == pytest.approx(0.5, rel=1e-3)


def test_conv_cell_with_spectral_norm_is_a_contraction_and_converges():
    cell = ConvCell(4, norm_lambda=1.25)
    cell.conv.parametrizations.weight.original.data.mul_(50.0)
    deq = DEQ(cell, tol=1e-5, max_iter=200)
    z = deq(torch.randn(2, 4, 6, 6))
    assert deq.stats.converged
    factor = contraction_factor(cell, z, torch.randn(2, 4, 6, 6))
    assert (factor <= 1 / 1.25 + 1e-3).all()


def test_contraction_factor_of_a_linear_cell_is_the_spectral_norm():
    w = torch.randn(10, 10, dtype=torch.float64)

    class Linear(nn.Module):
        def forward(self, z, u):
            return z @ w.t() + u

    z = torch.randn(3, 10, dtype=torch.float64)
    factor = contraction_factor(Linear(), z, z, n_iter=300)
    assert torch.allclose(factor, torch.linalg.matrix_norm(w, 2).expand(3), rtol=1e-6)


def test_spectral_parametrisation_works_inside_functional_call():
    cell = ConvCell(2)
    deq = DEQ(cell, grad="implicit", tol=1e-10, max_iter=500).double().eval()
    u = torch.randn(1, 2, 5, 5, dtype=torch.float64, requires_grad=True)
    params = dict(deq.named_parameters())
    out = functional_call(deq, params, (u,))
    (grad,) = torch.autograd.grad(out.sum(), u)
    assert torch.isfinite(grad).all() and grad.abs().sum() > 0


def test_exact_derivatives_switches_every_deq_to_unrolled_and_back():
    from deq_plugin import exact_derivatives

    model = nn.Sequential(DEQ(DenseCell(4), grad="phantom", tol=1e-3), DEQ(DenseCell(4), grad="implicit", tol=1e-4))
    with exact_derivatives(model, tol=1e-8):
        assert [(m.grad, m.tol) for m in model] == [("unrolled", 1e-8), ("unrolled", 1e-8)]
    assert [(m.grad, m.tol) for m in model] == [("phantom", 1e-3), ("implicit", 1e-4)]
    with pytest.raises(RuntimeError, match="inside"):
        with exact_derivatives(model, tol=1e-8):
            raise RuntimeError("inside")
    assert [(m.grad, m.tol) for m in model] == [("phantom", 1e-3), ("implicit", 1e-4)]
    with pytest.raises(ValueError, match="tol must be > 0, got 0"):
        with exact_derivatives(model, tol=0):
            pass
