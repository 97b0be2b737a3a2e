"""deq_plugin.swap on score models written in other codebases' styles (see codebase_standins)."""
import copy
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from benchmarks.codebase_standins import DDPMStandin, LearnedShortcutBlock, MLPEnergy, NCSNv2Standin
from deq_plugin import (
    BlockSpec, DEQBlock, ShortcutResidualCell, StackCell, check_identity_shortcut, contraction_factor, layer_stats, prepare_layers, swap,
)
from deq_plugin.blocks import Bypass

NCSN_TARGETS = ("res1.0", "res1.1", "res2.1")
DDPM_SPEC = {"down.0.block.1": "residual", "mid.block_1": "residual"}


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def ncsn_inputs(batch: int = 4):
    return torch.rand(batch, 3, 12, 12), torch.arange(batch) % 4


def ddpm_inputs(batch: int = 4):
    return torch.randn(batch, 3, 8, 8), torch.tensor([1, 50, 300, 999])[:batch]


def dsm_loss(model: nn.Module, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Denoising score matching at the model's noise levels: ||σ s(x + σε, y) + ε||²."""
    sigma = model.sigmas[labels][:, None, None, None]
    noise = torch.randn_like(x)
    return (sigma * model(x + sigma * noise, labels) + noise).pow(2).flatten(1).sum(1).mean()


def energy_dsm_loss(model: nn.Module, x: torch.Tensor, sigma: float = 0.3) -> torch.Tensor:
    """DSM for an energy: the score is -∇E(x̃), differentiated again for the parameter gradient."""
    noise = torch.randn_like(x)
    x_tilde = (x + sigma * noise).requires_grad_(True)
    (grad_energy,) = torch.autograd.grad(model(x_tilde).sum(), x_tilde, create_graph=True)
    return (sigma * -grad_energy + noise).pow(2).sum(1).mean()


def train_losses(model: nn.Module, loss_fn, steps: int = 6, lr: float = 3e-3, unused: tuple[str, ...] = ()) -> list[float]:
    """Losses of `steps` Adam steps on one fixed batch (same noise each step); every parameter but
    those named in `unused` (which the loss does not depend on) must get a finite gradient."""
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    losses = []
    for _ in range(steps):
        torch.manual_seed(1)
        loss = loss_fn()
        optimizer.zero_grad()
        loss.backward()
        for name, p in model.named_parameters():
            if name in unused:
                continue
            assert p.grad is not None and torch.isfinite(p.grad).all(), f"parameter {name} has no finite gradient"
        optimizer.step()
        losses.append(loss.item())
    return losses


@pytest.mark.parametrize(
    "make, inputs",
    [(NCSNv2Standin, ncsn_inputs), (DDPMStandin, ddpm_inputs), (MLPEnergy, lambda: (torch.randn(8, 4),))],
)
def test_an_empty_spec_leaves_the_model_bit_identical(make, inputs):
    model = make().eval()
    args = inputs()
    before = model(*args)
    state = copy.deepcopy(model.state_dict())
    swap(model, {}, args)
    assert torch.equal(model(*args), before)
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items()) and state.keys() == model.state_dict().keys()


def conv_branch_reference(block: nn.Module, z: torch.Tensor, dilation: int) -> torch.Tensor:
    """r(z) of an NCSNv2 block without norm layers, written out with F.conv2d and its effective weights."""
    h = F.conv2d(F.elu(z), block.conv1.weight, block.conv1.bias, padding=dilation, dilation=dilation)
    return F.conv2d(F.elu(h), block.conv2.weight, block.conv2.bias, padding=dilation, dilation=dilation)


@pytest.mark.parametrize("grad", ["phantom", "implicit", "unrolled"])
def test_ncsnv2_blocks_become_converging_deqs_that_keep_their_weights_and_train(grad):
    model = NCSNv2Standin()
    x, labels = ncsn_inputs()
    conv_weights = {f"{t}.conv{i}": model.get_submodule(f"{t}.conv{i}").weight.detach().clone() for t in NCSN_TARGETS for i in (1, 2)}
    swap(model, {t: "residual" if grad == "phantom" else BlockSpec("residual", {"grad": grad}) for t in NCSN_TARGETS}, (x, labels))

    state = model.state_dict()
    for path, weight in conv_weights.items():
        block_path, conv = path.rsplit(".", 1)
        assert torch.equal(state[f"{block_path}.deq.cell.block.{conv}.parametrizations.weight.original"], weight)

    captured = {}
    hook = model.res2[1].register_forward_hook(lambda m, args, out: captured.update(u=args[0], z=out))
    with torch.no_grad():
        model(x, labels)
    hook.remove()
    stats = layer_stats(model)
    assert set(stats) == set(NCSN_TARGETS)
    assert all(s.converged and s.n_iter <= 20 for s in stats.values()), stats
    z, u = captured["z"], captured["u"]
    block = model.res2[1].deq.cell.block
    reference = conv_branch_reference(block, z, dilation=2) + u
    assert ((reference - z).flatten(1).norm(dim=1) / z.flatten(1).norm(dim=1)).max() < 1e-3

    losses = train_losses(model, lambda: dsm_loss(model, x, labels))
    assert losses[-1] < 0.9 * losses[0], losses


def test_a_swapped_ncsnv2_state_dict_round_trips_strictly():
    model = NCSNv2Standin()
    x, labels = ncsn_inputs()
    swap(model, {t: "residual" for t in NCSN_TARGETS}, (x, labels))
    torch.manual_seed(5)
    twin = swap(NCSNv2Standin(), {t: "residual" for t in NCSN_TARGETS}, (x, labels))
    assert not torch.equal(twin(x, labels), model(x, labels))
    twin.load_state_dict(model.state_dict(), strict=True)
    model.eval(), twin.eval()
    assert torch.allclose(twin(x, labels), model(x, labels), atol=1e-6)


def test_norm_layers_keep_keeps_the_conditional_norms_and_remove_guarantees_a_contraction():
    x, labels = ncsn_inputs()
    kept = swap(NCSNv2Standin(), {"res1.1": BlockSpec("residual", {"norm_layers": "keep"})}, (x, labels), on_unconverged="warn")
    block = kept.res1[1].deq.cell.block
    assert type(block.normalize1).__name__ == "ConditionalInstanceNormPP"
    assert "res1.1.deq.cell.block.normalize1.embed.weight" in kept.state_dict()

    removed = swap(NCSNv2Standin(), {"res1.1": BlockSpec("residual", {"norm_lambda": 2.0})}, (x, labels))
    cell = removed.res1[1].deq.cell
    assert isinstance(cell, ShortcutResidualCell) and isinstance(cell.block.normalize1, Bypass)
    u = torch.randn(4, 8, 12, 12)
    z = removed.res1[1](u, labels)
    factor = contraction_factor(lambda z_, u_: cell(z_, u_, labels), z, u, n_iter=50)
    # ELU is 1-Lipschitz and each of the two convs has operator norm 1/λ: ||J|| <= 1/λ².
    assert factor.max() <= 0.25 * 1.01 and factor.max() > 0.01


def test_ddpm_resnet_blocks_with_a_time_embedding_swap_converge_and_train():
    model = DDPMStandin()
    x, t = ddpm_inputs()
    before = {k: v.clone() for k, v in model.state_dict().items() if k.startswith(("mid.block_1.conv", "mid.block_1.temb_proj"))}
    swap(model, DDPM_SPEC, (x, t))
    assert isinstance(model.mid.block_1, DEQBlock)
    for key, value in before.items():
        block, layer, param = key.rsplit(".", 2)
        new_key = f"{block}.deq.cell.block.{layer}." + ("parametrizations.weight.original" if param == "weight" else param)
        assert torch.equal(model.state_dict()[new_key], value)
    with torch.no_grad():
        model(x, t)
    assert all(s.converged and s.n_iter <= 20 for s in layer_stats(model).values())
    with pytest.raises(ValueError, match="'mid.block_1' \\(in 'mid.block_1'\\) did not converge on the example inputs"):
        swap(DDPMStandin(), {"mid.block_1": BlockSpec("residual", {"dropout": "keep", "tol": 1e-6})}, (x, t))

    def loss():
        noise = torch.randn_like(x)
        return (model(x + noise, t) - noise).pow(2).mean()

    losses = train_losses(model, loss)
    assert losses[-1] < 0.9 * losses[0], losses
    twin = swap(DDPMStandin(), DDPM_SPEC, (x, t))
    twin.load_state_dict(model.state_dict(), strict=True)


def test_an_mlp_energy_in_a_module_list_keeps_its_layers_and_trains():
    model = MLPEnergy()
    x = torch.randn(16, 4)
    weight = model.layers[1].weight.detach().clone()
    first = model.layers[0]
    swap(model, {"layers.1": "mlp_stack", "layers.2": "mlp_stack"}, (x,))
    cell = model.layers[1].deq.cell
    assert isinstance(cell, StackCell)
    assert torch.equal(model.state_dict()["layers.1.deq.cell.body.0.parametrizations.weight.original"], weight)
    assert model.layers[0] is first
    h0 = F.softplus(first(x))
    z = model.layers[1](h0)
    linear = cell.body[0]
    reference = F.softplus(z @ linear.weight.t() + linear.bias + h0)
    assert torch.allclose(reference, z, atol=1e-3 * z.abs().max().item())
    losses = train_losses(model, lambda: energy_dsm_loss(model, x), unused=("readout.bias",))  # a constant energy shift
    assert losses[-1] < losses[0], losses
    twin = swap(MLPEnergy(), {"layers.1": "mlp_stack", "layers.2": "mlp_stack"}, (x,))
    twin.load_state_dict(model.state_dict(), strict=True)


class _Holder(nn.Module):
    def __init__(self, block: nn.Module) -> None:
        super().__init__()
        self.block = block

    def forward(self, x):
        return self.block(x)


class _ProjectedSkip(nn.Module):
    """A learned shortcut under a name no codebase convention uses."""

    def __init__(self, channels: int = 4) -> None:
        super().__init__()
        self.proj = nn.Conv2d(channels, channels, 1)
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x):
        return self.proj(x) + self.conv(F.elu(x))


class _RescaledSkip(_ProjectedSkip):
    def forward(self, x):
        return (x + self.conv(F.elu(x))) / math.sqrt(2.0)


class _NoSkip(_ProjectedSkip):
    def forward(self, x):
        return self.conv(F.elu(x))


@pytest.mark.parametrize(
    "block, message",
    [
        (LearnedShortcutBlock(4), "'block' \\(LearnedShortcutBlock\\) has a learned shortcut 'shortcut'"),
        (_ProjectedSkip(), "'block' \\(_ProjectedSkip\\) is not x \\+ r\\(x\\) with an identity shortcut"),
        (_NoSkip(), "'block' \\(_NoSkip\\) is not x \\+ r\\(x\\)"),
    ],
)
def test_blocks_without_an_identity_shortcut_are_refused_by_name(block, message):
    with pytest.raises(ValueError, match=message):
        swap(_Holder(block), {"block": "residual"}, (torch.randn(2, 4, 6, 6),))


def test_a_rescaled_skip_as_in_ncsn_plus_plus_is_measured_and_divided_out():
    block = _RescaledSkip()
    holder = _Holder(block)
    x = torch.randn(2, 4, 6, 6)
    swap(holder, {"block": BlockSpec("residual", {"tol": 1e-6})}, (x,))
    cell = holder.block.deq.cell
    assert cell.shortcut_scale == pytest.approx(1 / math.sqrt(2.0), rel=1e-5)
    z = holder(x)
    reference = F.conv2d(F.elu(z), block.conv.weight, block.conv.bias, padding=1) + x  # z = r(z) + u
    assert torch.allclose(reference, z, atol=1e-4)


def test_a_channel_changing_ncsnv2_block_is_refused():
    with pytest.raises(ValueError, match="'res2.0' \\(ResidualBlock\\) has a learned shortcut"):
        swap(NCSNv2Standin(), {"res2.0": "residual"}, ncsn_inputs())


def test_check_identity_shortcut_and_prepare_layers_directly():
    block = NCSNv2Standin().res1[0]
    x, labels = torch.randn(2, 8, 6, 6), torch.tensor([0, 1])
    assert check_identity_shortcut(block, (x, labels)) == pytest.approx(1.0, abs=1e-6)
    prepare_layers(block, norm_layers="remove")
    assert isinstance(block.normalize2, Bypass)
    with pytest.raises(ValueError, match="unknown norm_layers 'drop'.*remove.*keep"):
        prepare_layers(block, norm_layers="drop")


def test_conv_stack_keeps_dilation_padding_and_weights():
    stack = nn.Sequential(nn.Conv2d(3, 6, 3, padding=2, dilation=2), nn.ELU(), nn.Conv2d(6, 6, 3, padding=2, dilation=2), nn.ELU())
    host = nn.Sequential(stack)
    x = torch.randn(2, 3, 10, 10)
    first, second = stack[0], stack[2]
    w2 = second.weight.detach().clone()
    swap(host, {"0": "conv_stack"}, (x,))
    block = host[0]
    assert block.injection[0] is first and block.deq.cell.body[0] is second and second.dilation == (2, 2)
    assert torch.equal(host.state_dict()["0.deq.cell.body.0.parametrizations.weight.original"], w2)
    z, u = block(x), F.elu(first(x))
    reference = F.elu(F.conv2d(z, second.weight, second.bias, padding=2, dilation=2) + u)
    assert z.shape == (2, 6, 10, 10) and torch.allclose(reference, z, atol=1e-3)

    shrinking = nn.Sequential(nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ELU(), nn.Conv2d(6, 6, 3, padding=1, dilation=2)))
    with pytest.raises(ValueError, match="'0'.*shape"):
        swap(shrinking, {"0": "conv_stack"}, (x,))
    with pytest.raises(ValueError, match="a cell must keep its state's size"):
        swap(nn.Sequential(nn.Sequential(nn.Conv2d(3, 6, 3, padding=1))), {"0": "conv_stack"}, (x,))


def test_swap_fails_or_warns_on_a_layer_that_does_not_converge():
    x, labels = ncsn_inputs()
    spec = {"res1.1": BlockSpec("residual", {"max_iter": 2, "tol": 1e-7})}
    with pytest.raises(ValueError, match=r"'res1.1' \(in 'res1.1'\) did not converge on the example inputs: 2 iterations, relative residual .* > tol 1e-07\. Try"):
        swap(NCSNv2Standin(), spec, (x, labels))
    with pytest.warns(RuntimeWarning, match="'res1.1' \\(in 'res1.1'\\) did not converge"):
        swap(NCSNv2Standin(), spec, (x, labels), on_unconverged="warn")
    with pytest.raises(ValueError, match="unknown on_unconverged 'ignore'"):
        swap(NCSNv2Standin(), spec, (x, labels), on_unconverged="ignore")


def test_a_module_list_itself_is_not_a_target():
    with pytest.raises(ValueError, match="'res1' \\(ModuleList\\) has no forward.*'res1.0'"):
        swap(NCSNv2Standin(), {"res1": "residual"}, ncsn_inputs())


def test_data_parallel_models_swap_with_unwrapped_names_and_report_stats():
    x, labels = ncsn_inputs()
    wrapped = nn.DataParallel(NCSNv2Standin())
    swap(wrapped, {"res1.1": "residual"}, (x, labels))
    assert isinstance(wrapped.module.res1[1], DEQBlock)
    wrapped(x, labels)
    stats = layer_stats(wrapped)
    assert list(stats) == ["res1.1"] and stats["res1.1"] is wrapped.module.res1[1].deq.stats


def test_distributed_data_parallel_asks_for_the_swap_before_wrapping(tmp_path):
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        wrapped = nn.parallel.DistributedDataParallel(NCSNv2Standin())
        with pytest.raises(ValueError, match="swap the model before wrapping it in DistributedDataParallel"):
            swap(wrapped, {"res1.1": "residual"}, ncsn_inputs())
        assert layer_stats(wrapped) == {}
    finally:
        dist.destroy_process_group()


def test_layer_stats_names_unrun_and_duplicate_layers():
    from deq_plugin import DEQ, DenseCell

    model = nn.Sequential(DEQ(DenseCell(3), name="core"), DEQ(DenseCell(3), name="core"), DEQ(DenseCell(3), name="other"))
    assert layer_stats(model) == {"0": None, "1": None, "other": None}
    model(torch.randn(2, 3))
    stats = layer_stats(model)
    assert stats["0"] is model[0].stats and stats["other"].converged


def test_a_failed_swap_leaves_the_model_as_it_was():
    model = NCSNv2Standin().eval()
    x, labels = ncsn_inputs()
    before, keys = model(x, labels), list(model.state_dict())
    spec = {"res1.0": "residual", "res1.1": BlockSpec("residual", {"max_iter": 1, "tol": 1e-9})}
    with pytest.raises(ValueError, match="'res1.1'.*did not converge"):
        swap(model, spec, (x, labels))
    assert list(model.state_dict()) == keys and torch.equal(model(x, labels), before)

    from test_swap import Host

    host = Host()
    kinds = [type(m).__name__ for m in host.stack]
    inputs = torch.randn(3, 3)
    expected = host(inputs)
    with pytest.raises(ValueError, match="'stack\\[0:2\\]'.*did not converge"):
        swap(host, {"stack[4:6]": "dense", "stack[0:2]": BlockSpec("dense", {"max_iter": 1, "tol": 1e-9})}, (inputs,))
    assert [type(m).__name__ for m in host.stack] == kinds and torch.equal(host(inputs), expected)
