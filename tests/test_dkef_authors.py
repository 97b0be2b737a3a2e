"""The paper authors' DKEF as a config of ours: the linear DEQ cell, the skip, the init, RMSprop, the rows."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from configs.dkef_deq_authors import get_config as authors_config
from configs.paper_rows import ABLATION_ROWS, GROUPS, row_config
from deq_plugin import DEQ, DenseCell
from patches import apply_patch
from score_matching.models.dkef import DKEF
from score_matching.models.mlp import MLP, initialize_linear_layers
from score_matching.optim import get_optimizer

# The authors' table 3 counts 22k parameters for its DEQ DKEF at d = 100 without the inducing points:
# per kernel U (100×32 + 32), W (32×32) and S (100×32); three kernels; 3 kernel weights, 3 bandwidths, λ.
AUTHORS_PARAMS_D100 = 3 * (100 * 32 + 32 + 32 * 32 + 100 * 32) + 3 + 3 + 1


def _authors_dkef(d: int = 100, grad: str = "implicit") -> DKEF:
    config = authors_config()
    config.deq.grad = grad
    m = config.model
    torch.manual_seed(0)
    model = DKEF(d, n_inducing=20, hidden=m.hidden, depth=m.depth, latent=m.latent, activation=m.activation,
                 init_bandwidths=tuple(m.init_bandwidths), out_layer=m.feature_out_layer, skip=m.feature_skip)
    x = torch.randn(8, d)
    model.init_inducing_points(torch.randn(40, d))
    model = apply_patch(model, "dkef", config.deq, (x[:4],))
    initialize_linear_layers(model.features, m.feature_init)
    return model


@pytest.mark.parametrize("grad", ["implicit", "unrolled"])
def test_linear_cell_fixed_point_and_gradients_match_the_closed_form(grad: str) -> None:
    """z* = (I − A)⁻¹ u with A = W / (λ ‖W‖_F), and its gradients w.r.t. u and the raw W, in float64."""
    torch.manual_seed(0)
    lam = 1 + 1e-6
    cell = DenseCell(6, activation="identity", norm="frobenius", norm_lambda=lam).double()
    deq = DEQ(cell, tol=1e-12, max_iter=500, grad=grad)
    u = torch.randn(3, 6, dtype=torch.float64, requires_grad=True)
    weights = torch.randn(3, 6, dtype=torch.float64)
    z = deq(u)
    loss = (weights * z).sum()
    grad_u, grad_w = torch.autograd.grad(loss, (u, cell.linear.parametrizations.weight.original))

    raw = cell.linear.parametrizations.weight.original.detach().clone().requires_grad_(True)
    u_ref = u.detach().clone().requires_grad_(True)
    a = raw / (lam * (raw.square().sum().sqrt() + 1e-6))
    z_ref = torch.linalg.solve(torch.eye(6, dtype=torch.float64) - a, u_ref.T).T
    ref_u, ref_w = torch.autograd.grad((weights * z_ref).sum(), (u_ref, raw))
    torch.testing.assert_close(z, z_ref, rtol=1e-9, atol=1e-10)
    torch.testing.assert_close(grad_u, ref_u, rtol=1e-8, atol=1e-9)
    torch.testing.assert_close(grad_w, ref_w, rtol=1e-8, atol=1e-9)


def test_authors_features_are_the_linear_fixed_point_plus_the_skip() -> None:
    """φ(x) = (I − A)⁻¹ softplus(U x + b) + S x, written out with the module's own weights."""
    model = _authors_dkef(d=5)
    net = model.features[1]
    x = torch.randn(7, 5)
    cell = net.stack.deq.cell
    a = cell.linear.weight.detach()
    h = torch.nn.functional.softplus(net.in_layer[0](x)).detach()
    expected = torch.linalg.solve(torch.eye(32) - a, h.T).T + x @ net.skip.weight.detach().T
    torch.testing.assert_close(net(x).detach(), expected, rtol=1e-4, atol=1e-4)
    assert isinstance(net.out_layer, nn.Identity)


def test_authors_dkef_has_the_authors_parameter_count() -> None:
    model = _authors_dkef(d=100)
    params = sum(p.numel() for name, p in model.named_parameters() if name != "inducing_points")
    assert params == AUTHORS_PARAMS_D100 == 22_375


def test_fan_out_normal_init_draws_every_linear_including_a_normalised_one() -> None:
    torch.manual_seed(0)
    layers = nn.Sequential(nn.Linear(400, 300), nn.Linear(300, 200))
    normalised = DenseCell(200, activation="identity")
    initialize_linear_layers(nn.ModuleList([layers, normalised]), "fan_out_normal")
    for layer, fan_out in ((layers[0], 300), (layers[1], 200)):
        assert layer.weight.std().item() == pytest.approx(1 / math.sqrt(fan_out), rel=0.02)
        assert layer.bias.std().item() == pytest.approx(1 / math.sqrt(fan_out), rel=0.2)
    raw = normalised.linear.parametrizations.weight.original
    assert raw.std().item() == pytest.approx(1 / math.sqrt(200), rel=0.02)
    with pytest.raises(ValueError, match="'he_normal'.*default.*fan_out_normal"):
        initialize_linear_layers(layers, "he_normal")


def test_mlp_skip_and_no_output_layer() -> None:
    torch.manual_seed(0)
    net = MLP(4, 6, 6, depth=2, out_layer=False, skip=True)
    x = torch.randn(5, 4)
    hidden = net.stack(net.in_layer(x))
    torch.testing.assert_close(net(x), hidden + x @ net.skip.weight.T)
    assert net.skip.bias is None
    with pytest.raises(ValueError, match=r"out_features \(3\) must equal hidden \(6\)"):
        MLP(4, 6, 3, depth=2, out_layer=False)
    with pytest.raises(TypeError, match="skip connection"):
        net.as_sequential()


def test_rmsprop_step_is_the_l2_decayed_rmsprop_update() -> None:
    config = authors_config()
    p = nn.Parameter(torch.tensor([1.0, -2.0]))
    optimizer = get_optimizer(config, [p])
    assert isinstance(optimizer, torch.optim.RMSprop)
    p.grad = torch.tensor([0.5, 0.25])
    optimizer.step()
    lr, decay, eps = config.optim.lr, config.optim.weight_decay, config.optim.eps
    g = torch.tensor([0.5, 0.25]) + decay * torch.tensor([1.0, -2.0])
    expected = torch.tensor([1.0, -2.0]) - lr * g / ((0.01 * g.square()).sqrt() + eps)
    torch.testing.assert_close(p.detach(), expected)


def test_ablation_ends_at_the_authors_config_and_changes_one_thing_per_step() -> None:
    last = row_config(ABLATION_ROWS[-1]).to_dict()
    authors = row_config("table3/gaussian100/DEQ-SM DKEF (authors)").to_dict()
    assert last["model"] == authors["model"] and last["optim"] == authors["optim"] and last["deq"] == authors["deq"]
    assert GROUPS["dkef-authors-ablation"].rows == tuple(ABLATION_ROWS)
    for before, after in zip(ABLATION_ROWS, ABLATION_ROWS[1:]):
        a, b = row_config(before), row_config(after)
        changed = {f"{s}.{k}" for s in ("model", "optim", "deq") for k in a[s] if a[s][k] != b[s][k]}
        assert 1 <= len(changed) <= 3, (after, changed)


def test_linear_config_is_the_authors_feature_nets_with_our_training() -> None:
    from configs.dkef_deq import get_config as ours
    from configs.dkef_deq_linear import get_config as linear

    best, authors, default = linear(), authors_config(), ours()
    for field in ("hidden", "latent", "feature_out_layer", "feature_skip"):
        assert best.model[field] == authors.model[field], field
    assert best.deq == authors.deq
    assert best.optim == default.optim
    assert (best.model.feature_init, tuple(best.model.init_bandwidths)) == (
        default.model.feature_init, tuple(default.model.init_bandwidths))
