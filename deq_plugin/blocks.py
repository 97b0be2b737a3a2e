"""Block builders: turn an existing stack of layers into the DEQ block that replaces it.

Each builder takes the module it replaces plus options and returns a `DEQBlock`. DEQ options
(solver, tol, max_iter, grad, phantom_steps, phantom_tau, warm_start, check_every, solver_options,
backward_*) go to `DEQ`; `activation`, `norm` and `norm_lambda` configure the cell.
"""
from __future__ import annotations

import copy
from typing import Any, Callable

from torch import nn

from deq_plugin.cells import Activation, ConvCell, DEQBlock, DenseCell, ResidualCell
from deq_plugin.deq import DEQ
from deq_plugin.norms import normalize_all
from deq_plugin.registry import Table

BlockBuilder = Callable[..., nn.Module]
BLOCKS: Table[BlockBuilder] = Table("DEQ block")
register_block = BLOCKS.register
INJECTIONS = ("identity", "layer")


def _layers(module: nn.Module, kind: type) -> list[nn.Module]:
    layers = [m for m in module.modules() if isinstance(m, kind)]
    if not layers:
        raise ValueError(f"expected at least one {kind.__name__} inside {type(module).__name__}, found none")
    return layers


def _check_injection(injection: str) -> None:
    if injection not in INJECTIONS:
        raise ValueError(f"unknown injection {injection!r}; valid: {list(INJECTIONS)}")


@register_block("dense")
def dense_block(
    original: nn.Module,
    *,
    injection: str = "identity",
    activation: str = "softplus",
    norm: str = "frobenius",
    norm_lambda: float = 2.0,
    name: str | None = None,
    **deq_options: Any,
) -> DEQBlock:
    """An MLP stack (B, d_in) -> (B, d_out) becomes z = σ(W z + g(y)) of width d_out (equation 5).

    injection="identity": g(y) = y, the stack's input is already the injected features (needs
    d_in == d_out); injection="layer": g(y) = σ(Linear(y)), a fresh single layer (the paper's g).
    """
    _check_injection(injection)
    linears = _layers(original, nn.Linear)
    d_in, d_out = linears[0].in_features, linears[-1].out_features
    if injection == "identity":
        if d_in != d_out:
            raise ValueError(f"injection='identity' needs equal input and output widths, got {d_in} -> {d_out}; use 'layer'")
        g: nn.Module = nn.Identity()
    else:
        g = nn.Sequential(nn.Linear(d_in, d_out), Activation(activation))
    cell = DenseCell(d_out, activation, norm, norm_lambda)
    return DEQBlock(g, DEQ(cell, name=name, **deq_options))


@register_block("conv")
def conv_block(
    original: nn.Module,
    *,
    injection: str = "layer",
    activation: str = "softplus",
    norm: str = "spectral",
    norm_lambda: float = 2.0,
    name: str | None = None,
    **deq_options: Any,
) -> DEQBlock:
    """A stride-1 conv stack becomes z = σ(W * z + g(y)), W a kernel like the stack's last conv.

    injection="layer": g(y) = σ(conv(y)), a fresh conv with the stack's first conv's shape (the
    paper's table 7); injection="identity": g(y) = y.
    """
    _check_injection(injection)
    convs = _layers(original, nn.Conv2d)
    first, last = convs[0], convs[-1]
    channels, kernel = last.out_channels, last.kernel_size[0]
    if injection == "identity":
        if first.in_channels != channels:
            raise ValueError(f"injection='identity' needs equal channels, got {first.in_channels} -> {channels}; use 'layer'")
        g: nn.Module = nn.Identity()
    else:
        conv = nn.Conv2d(first.in_channels, channels, first.kernel_size, padding=first.padding, bias=first.bias is not None)
        g = nn.Sequential(conv, Activation(activation))
    cell = ConvCell(channels, kernel, activation, norm, norm_lambda)
    return DEQBlock(g, DEQ(cell, name=name, **deq_options))


@register_block("residual")
def residual_block(
    original: nn.Module,
    *,
    norm: str = "frobenius",
    norm_lambda: float = 2.0,
    name: str | None = None,
    **deq_options: Any,
) -> DEQBlock:
    """A residual block r(x, *context) becomes z = h(z, *context) + x, h a normalised copy of r.

    The block's input is the injection u = g(y) (the preceding layers, as in the paper's
    DEQ-ResBlock), and every Linear/Conv2d weight of h is normalised so h can be contractive.
    Whether h *is* contractive depends on its structure (an identity shortcut is not): patches
    pass the residual branch, not the whole block, when the block has one.
    """
    h = normalize_all(copy.deepcopy(original), norm, norm_lambda)
    return DEQBlock(nn.Identity(), DEQ(ResidualCell(h), name=name, **deq_options), pass_context=True)
