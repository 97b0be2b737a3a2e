"""The pieces `deq_plugin` exports for writing one's own block: tables, cells, norms, solvers."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from deq_plugin import (
    ACTIVATIONS, BLOCKS, DEQ, GRAD_MODES, NORMS, SOLVERS, Activation, DEQBlock, DEQStats, DenseCell, FrobeniusNorm,
    ResidualCell, SolverResult, SpectralNorm, normalize_all, normalize_weight, picard, register_block, register_solver,
    residual_block, swap,
)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def test_tables_list_their_entries():
    assert {"residual", "residual_branch", "conv_stack", "mlp_stack", "dense", "conv"} <= set(BLOCKS.names())
    assert ACTIVATIONS.names() == ["elu", "identity", "softplus", "tanh"]
    assert GRAD_MODES == ("phantom", "implicit", "unrolled") and NORMS == ("none", "frobenius", "spectral")
    assert {"picard", "anderson"} <= set(SOLVERS.names())


def test_activation_modules_apply_the_named_function():
    x = torch.linspace(-3, 3, 13)
    assert torch.equal(Activation("elu")(x), F.elu(x))
    assert torch.allclose(Activation("softplus")(x), torch.log1p(torch.exp(x)))


def test_a_registered_builder_is_used_by_swap_and_re_registering_it_is_harmless():
    def halve_block(original, *, name=None, **options):
        """z = ½ tanh(z) + x: a contraction whose fixed point is checked below."""
        return DEQBlock(nn.Identity(), DEQ(ResidualCell(nn.Sequential(nn.Tanh(), _Scale(0.5))), name=name, tol=1e-7, **options), pass_context=True)

    register_block("test_halve", replace=True)(halve_block)
    register_block("test_halve")(halve_block)
    assert BLOCKS.get("test_halve") is halve_block
    model = nn.Sequential(nn.Identity())
    x = torch.randn(3, 5)
    swap(model, {"0": "test_halve"}, (x,))
    z = model(x)
    assert torch.allclose(z, 0.5 * torch.tanh(z) + x, atol=1e-6)


class _Scale(nn.Module):
    def __init__(self, factor: float) -> None:
        super().__init__()
        self.factor = factor

    def forward(self, x, *context):
        return self.factor * x


def test_residual_block_and_residual_cell_solve_z_equals_h_of_z_plus_u():
    branch = nn.Sequential(nn.Linear(4, 4), nn.Tanh(), nn.Linear(4, 4))
    weight = branch[0].weight.detach().clone()
    block = residual_block(branch, norm="frobenius", tol=1e-7)
    assert isinstance(block.deq.cell, ResidualCell) and torch.equal(branch[0].parametrizations.weight.original, weight)
    u = torch.randn(6, 4)
    z = block(u)
    w1, w2 = branch[0].weight, branch[2].weight  # the normalised weights
    reference = torch.tanh(z @ w1.t() + branch[0].bias) @ w2.t() + branch[2].bias + u
    assert torch.allclose(reference, z, atol=1e-5)
    assert isinstance(block.deq.stats, DEQStats) and block.deq.stats.converged and block.deq.stats.n_iter > 1


def test_frobenius_and_spectral_norms_divide_by_the_stated_norm():
    w = torch.randn(5, 7)
    assert torch.allclose(FrobeniusNorm(lam=2.0, eps=0.0)(w), w / (2.0 * torch.linalg.matrix_norm(w)))
    linear = normalize_weight(nn.Linear(7, 5), "spectral", 3.0)
    assert isinstance(linear.parametrizations.weight[0], SpectralNorm)
    from deq_plugin import refresh_spectral_norms

    refresh_spectral_norms(linear, torch.Size([1, 7]))
    assert torch.linalg.matrix_norm(linear.weight.detach(), 2).item() == pytest.approx(1 / 3.0, rel=1e-3)


def test_normalize_all_parametrises_every_linear_and_conv():
    module = nn.Sequential(nn.Conv2d(2, 2, 3, padding=1), nn.ReLU(), nn.Sequential(nn.Linear(3, 3)), nn.GroupNorm(1, 2))
    normalize_all(module, "frobenius")
    assert [type(m.parametrizations.weight[0]).__name__ for m in (module[0], module[2][0])] == ["FrobeniusNorm"] * 2
    assert not hasattr(module[3], "parametrizations")


def test_a_registered_solver_is_used_by_the_deq_and_returns_a_solver_result():
    @register_solver("test_damped_picard", replace=True)
    def damped(f, z0, *, tol, max_iter, check_every=1):
        """Picard on z <- (z + f(z)) / 2: the same fixed points, more slowly."""
        return picard(lambda z: 0.5 * (z + f(z)), z0, tol=tol, max_iter=max_iter, check_every=check_every)

    cell = DenseCell(6)
    u = torch.randn(4, 6)
    plain = DEQ(cell, tol=1e-7, max_iter=500)
    slow = DEQ(cell, solver="test_damped_picard", tol=1e-7, max_iter=500)
    z_plain, z_slow = plain(u), slow(u)
    assert torch.allclose(z_plain, z_slow, atol=1e-5) and slow.stats.n_iter > plain.stats.n_iter
    result = damped(lambda z: cell(z, u), torch.zeros_like(u), tol=1e-7, max_iter=500)
    assert isinstance(result, SolverResult) and result.converged and result.rel_residual.shape == (4,)
