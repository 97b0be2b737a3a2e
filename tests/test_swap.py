"""deq_plugin.swap: replacing submodules and slices by DEQ blocks, with fit checks."""
import pytest
import torch
from torch import nn

from deq_plugin import DEQ, BlockSpec, DEQBlock, swap


def mlp(width: int = 6, depth: int = 4) -> nn.Sequential:
    layers = []
    for _ in range(depth):
        layers += [nn.Linear(width, width), nn.Softplus()]
    return nn.Sequential(*layers)


class Host(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.inp = nn.Linear(3, 6)
        self.stack = mlp()
        self.out = nn.Linear(6, 1)

    def forward(self, x):
        return self.out(self.stack(self.inp(x)))


def test_swap_a_whole_stack_keeps_everything_else():
    torch.manual_seed(0)
    host = Host()
    before = {k: v.clone() for k, v in host.state_dict().items() if not k.startswith("stack.")}
    swap(host, {"stack": BlockSpec("dense", {"tol": 1e-6})}, (torch.randn(4, 3),))
    assert isinstance(host.stack, DEQBlock) and isinstance(host.stack.deq, DEQ)
    after = host.state_dict()
    assert all(torch.equal(after[k], v) for k, v in before.items())
    x = torch.randn(5, 3, requires_grad=True)
    y = host(x)
    assert y.shape == (5, 1) and host.stack.deq.stats.converged
    (score,) = torch.autograd.grad(y.sum(), x)
    assert score.abs().sum() > 0


def test_swap_a_slice_of_a_sequential():
    host = Host()
    swap(host, {"stack[2:6]": BlockSpec("dense", {"grad": "implicit"})}, (torch.randn(2, 3),))
    kinds = [type(m).__name__ for m in host.stack]
    assert kinds == ["Linear", "Softplus", "DEQBlock", "Linear", "Softplus"]
    assert host(torch.randn(2, 3)).shape == (2, 1)


def test_unknown_paths_and_blocks_are_clear_errors():
    host = Host()
    with pytest.raises(ValueError, match="no submodule 'stak'.*valid paths.*'stack'"):
        swap(host, {"stak": BlockSpec("dense")}, (torch.randn(2, 3),))
    with pytest.raises(ValueError, match="unknown DEQ block 'lstm'.*conv.*dense.*residual"):
        swap(host, {"stack": BlockSpec("lstm")}, (torch.randn(2, 3),))
    with pytest.raises(ValueError, match="slice"):
        swap(host, {"stack[3:30]": BlockSpec("dense")}, (torch.randn(2, 3),))


def test_a_replacement_that_does_not_fit_is_rejected():
    class Widening(nn.Module):
        def __init__(self):
            super().__init__()
            self.inp = nn.Linear(3, 6)
            self.stack = nn.Sequential(nn.Linear(6, 8), nn.Softplus())

        def forward(self, x):
            return self.stack(self.inp(x))

    with pytest.raises(ValueError, match="equal input and output widths"):
        swap(Widening(), {"stack": BlockSpec("dense")}, (torch.randn(2, 3),))
    model = Widening()
    swap(model, {"stack": BlockSpec("dense", {"injection": "layer"})}, (torch.randn(2, 3),))
    assert model(torch.randn(2, 3)).shape == (2, 8)


def test_residual_block_passes_context_to_the_cell():
    class CondBlock(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(4, 4, 3, padding=1)
            self.embed = nn.Embedding(3, 4)

        def forward(self, x, labels):
            return torch.tanh(self.conv(x)) * self.embed(labels)[:, :, None, None]

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.block = CondBlock()

        def forward(self, x, labels):
            return self.block(x, labels)

    net = Net()
    x, labels = torch.randn(2, 4, 5, 5), torch.tensor([0, 2])
    swap(net, {"block": BlockSpec("residual_branch", {"tol": 1e-6, "norm": "spectral"})}, (x, labels))
    z = net(x, labels)
    cell = net.block.deq.cell
    assert torch.allclose(cell(z, x, labels), z, atol=1e-5)  # a fixed point of h(z, y) + u
    assert not torch.allclose(net(x, torch.tensor([1, 1])), z)


def test_conv_block_replaces_a_conv_stack():
    stack = nn.Sequential(nn.Conv2d(3, 8, 5, padding=2), nn.Softplus(), nn.Conv2d(8, 8, 5, padding=2), nn.Softplus())
    host = nn.Sequential(stack)
    swap(host, {"0": BlockSpec("conv", {"norm": "spectral"})}, (torch.randn(2, 3, 8, 8),))
    out = host(torch.randn(2, 3, 8, 8))
    assert out.shape == (2, 8, 8, 8) and host[0].deq.stats.converged
