"""Block builders: turn an existing module into the DEQ block that replaces it.

Each builder takes the module it replaces plus options and returns a `DEQBlock`. DEQ options
(solver, tol, max_iter, grad, phantom_steps, phantom_tau, warm_start, check_every, solver_options,
backward_*) go to `DEQ`; `activation`, `norm` and `norm_lambda` configure the cell. A builder that
accepts an `example_inputs` keyword receives the positional inputs the module was called with on
`swap`'s example inputs, to check the module's structure before rebuilding it.

Kinds that keep the module's own (trained) layers, normalising their weights in place:
- "residual": an identity-shortcut block x ↦ x + r(x, *context) (NCSNv2 `ResidualBlock`, DDPM
  `ResnetBlock`; also (x + r) / √2 as NCSN++ rescales it); the cell is z ↦ r(z, *context) + u.
  The shortcut is checked.
- "residual_branch": a module that *is* the residual branch r(x, *context); same cell.
- "conv_stack" / "mlp_stack": a stack of Conv2d / Linear layers with activations; its first
  layer (and what follows it up to the second) becomes the injection g(y) and the rest the
  cell z ↦ σ(T(z) + u), every layer with its own padding and dilation.
Kinds that build a fresh cell in the paper's layout (the original's weights are not used):
"dense" and "conv".
"""
from __future__ import annotations

from typing import Any, Callable, Sequence

import torch
from torch import Tensor, nn
from torch.func import functional_call

from deq_plugin.cells import Activation, ConvCell, DEQBlock, DenseCell, ResidualCell, ShortcutResidualCell, StackCell
from deq_plugin.deq import DEQ
from deq_plugin.norms import normalize_all
from deq_plugin.registry import Table

BlockBuilder = Callable[..., nn.Module]
BLOCKS: Table[BlockBuilder] = Table("DEQ block")
register_block = BLOCKS.register
INJECTIONS = ("identity", "layer")
NORM_LAYER_MODES = ("remove", "keep")
DROPOUT_MODES = ("remove", "keep")
# Attribute names public codebases give a block's shortcut path; one holding a layer is a learned shortcut.
SHORTCUT_ATTRIBUTES = ("shortcut", "skip", "skip_connection", "conv_shortcut", "nin_shortcut", "downsample", "Conv_2", "NIN_0")
TORCH_NORM_LAYERS = (
    nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm, nn.InstanceNorm1d, nn.InstanceNorm2d,
    nn.InstanceNorm3d, nn.GroupNorm, nn.LayerNorm,
)
# A shortcut rescaled by less than this (relative to the input) is taken for a missing one.
SHORTCUT_SCALE_MIN = 1e-3
DROPOUT_LAYERS = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout)


def _layers(module: nn.Module, kind: type) -> list[nn.Module]:
    layers = [m for m in module.modules() if isinstance(m, kind)]
    if not layers:
        raise ValueError(f"expected at least one {kind.__name__} inside {type(module).__name__}, found none")
    return layers


def _check_choice(option: str, value: str, valid: Sequence[str]) -> None:
    if value not in valid:
        raise ValueError(f"unknown {option} {value!r}; valid: {list(valid)}")


class Bypass(nn.Module):
    """Returns its first input unchanged, whatever else it is given: stands in for a removed layer."""

    def __init__(self, removed: str) -> None:
        super().__init__()
        self.removed = removed

    def extra_repr(self) -> str:
        return f"removed={self.removed}"

    def forward(self, x: Tensor, *args: Any, **kwargs: Any) -> Tensor:
        return x


def is_norm_layer(module: nn.Module) -> bool:
    """A torch normalisation layer, or a module whose class name contains "Norm" (InstanceNorm++, ...)."""
    return isinstance(module, TORCH_NORM_LAYERS) or "Norm" in type(module).__name__


def _replace_children(module: nn.Module, match: Callable[[nn.Module], bool]) -> list[str]:
    """Replaces every outermost submodule that `match`es by a `Bypass`; returns their paths."""
    removed = []
    for child_name, child in list(module.named_children()):
        if child_name == "parametrizations":
            continue
        if match(child):
            setattr(module, child_name, Bypass(type(child).__name__))
            removed.append(child_name)
        else:
            removed += [f"{child_name}.{path}" for path in _replace_children(child, match)]
    return removed


def prepare_layers(module: nn.Module, norm_layers: str = "remove", dropout: str = "remove") -> nn.Module:
    """Removes (replaces by `Bypass`) the norm layers and dropout of `module` in place, as chosen.

    norm_layers="remove": a norm layer divides by its input's own statistics, so no weight
    normalisation bounds its Lipschitz constant; without them the cell's contraction is
    guaranteed by the weight normalisation. "keep" leaves them (no guarantee; `swap` checks
    convergence on the example inputs). dropout="remove": a random cell has no fixed point.
    """
    _check_choice("norm_layers", norm_layers, NORM_LAYER_MODES)
    _check_choice("dropout", dropout, DROPOUT_MODES)
    if norm_layers == "remove":
        _replace_children(module, is_norm_layer)
    if dropout == "remove":
        _replace_children(module, lambda m: isinstance(m, DROPOUT_LAYERS))
    return module


def check_identity_shortcut(block: nn.Module, example_inputs: Sequence[Any], name: str | None = None) -> float:
    """Returns c where `block` is x ↦ c (x + r(x, ...)) with r ending in a Linear/Conv layer; raises otherwise.

    c is 1 for a plain identity shortcut and 1/√2 for the rescaled skip of NCSN++-style blocks. By
    structure: an attribute named like a shortcut (`SHORTCUT_ATTRIBUTES`) must be None or
    nn.Identity. On the example inputs: the block must keep x's shape, and with every Linear and
    Conv weight and bias set to zero (r then returns 0) it must return c x exactly, c > 0; a
    learned or missing shortcut does not.
    """
    label = f"{name!r} ({type(block).__name__})" if name else type(block).__name__
    for attribute in SHORTCUT_ATTRIBUTES:
        shortcut = getattr(block, attribute, None)
        if isinstance(shortcut, nn.Module) and not isinstance(shortcut, nn.Identity):
            raise ValueError(
                f"block {label} has a learned shortcut {attribute!r} ({type(shortcut).__name__}); the 'residual' kind "
                "needs an identity shortcut x + r(x). Swap a shape-preserving block instead, or pass its residual "
                "branch to the 'residual_branch' kind in a block of your own"
            )
    if not example_inputs or not isinstance(example_inputs[0], Tensor):
        raise ValueError(f"block {label}: the 'residual' kind needs the block's first input to be a tensor")
    x = example_inputs[0]
    zeroed = {
        f"{path}.{param_name}": torch.zeros_like(param)
        for path, layer in block.named_modules()
        if isinstance(layer, (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d))
        for param_name, param in layer.named_parameters(recurse=False)
    }
    with torch.no_grad():
        out = block(*example_inputs)
        if not isinstance(out, Tensor) or out.shape != x.shape:
            raise ValueError(
                f"block {label} returns shape {tuple(getattr(out, 'shape', ()))} for an input of shape {tuple(x.shape)}; "
                "the 'residual' kind needs a shape-preserving block"
            )
        if not zeroed:
            raise ValueError(f"block {label} has no Linear or Conv layer; the 'residual' kind cannot find its branch")
        bare = functional_call(block, zeroed, tuple(example_inputs))
    scale = ((bare * x).sum() / x.pow(2).sum().clamp_min(torch.finfo(x.dtype).tiny)).item()
    gap = (bare - scale * x).abs().max().item()
    if scale <= SHORTCUT_SCALE_MIN or gap > 1e-6 * max(x.abs().max().item(), 1.0):
        raise ValueError(
            f"block {label} is not x + r(x) with an identity shortcut: with its Linear/Conv layers zeroed it returns "
            f"a tensor {gap:.3g} away from {scale:.3g} times its input (a learned or missing shortcut, or a branch that "
            "does not end in a Linear/Conv layer). Use 'conv_stack' for a plain stack, or pass the block's residual "
            "branch to the 'residual_branch' kind in a block of your own"
        )
    return scale


@register_block("residual")
def identity_residual_block(
    original: nn.Module,
    *,
    norm: str = "spectral",
    norm_lambda: float = 2.0,
    norm_layers: str = "remove",
    dropout: str = "remove",
    shortcut_scale: float = 1.0,
    example_inputs: Sequence[Any] | None = None,
    name: str | None = None,
    **deq_options: Any,
) -> DEQBlock:
    """An identity-shortcut block x ↦ c (x + r(x, *context)) becomes z ↦ r(z, *context) + u, u = x.

    The block's own layers are used (weights normalised in place, `norm_layers` and `dropout`
    per `prepare_layers`); r is run as block(z) / c - z. With `example_inputs` the shortcut is
    checked and c measured first (`check_identity_shortcut`; `swap` always passes them);
    without them c is `shortcut_scale`.
    """
    if example_inputs is not None:
        shortcut_scale = check_identity_shortcut(original, example_inputs, name)
    _check_choice("norm_layers", norm_layers, NORM_LAYER_MODES)
    _check_choice("dropout", dropout, DROPOUT_MODES)
    branch = normalize_all(prepare_layers(original, norm_layers, dropout), norm, norm_lambda)
    return DEQBlock(nn.Identity(), DEQ(ShortcutResidualCell(branch, shortcut_scale), name=name, **deq_options), pass_context=True)


@register_block("residual_branch")
def residual_block(
    original: nn.Module,
    *,
    norm: str = "spectral",
    norm_lambda: float = 2.0,
    norm_layers: str = "keep",
    dropout: str = "remove",
    name: str | None = None,
    **deq_options: Any,
) -> DEQBlock:
    """A residual branch r(x, *context) (no shortcut) becomes z ↦ h(z, *context) + x.

    The block's input is the injection u = g(y) (the preceding layers, as in the paper's
    DEQ-ResBlock). h is `original` itself with every Linear/Conv2d weight normalised in place (and
    norm layers and dropout handled as `prepare_layers` says), so h can be contractive. Use it in
    a block of your own on the branch of a block whose shortcut the 'residual' kind cannot see.
    """
    h = normalize_all(prepare_layers(original, norm_layers, dropout), norm, norm_lambda)
    return DEQBlock(nn.Identity(), DEQ(ResidualCell(h), name=name, **deq_options), pass_context=True)


def _flatten(module: nn.Module) -> list[nn.Module]:
    if isinstance(module, nn.Sequential):
        return [layer for child in module for layer in _flatten(child)]
    return [module]


def _stack_block(
    original: nn.Module,
    layer_type: type,
    activation: str,
    norm: str,
    norm_lambda: float,
    name: str | None,
    deq_options: dict[str, Any],
) -> DEQBlock:
    layers = _flatten(original)
    where = [i for i, layer in enumerate(layers) if isinstance(layer, layer_type)]
    if not where:
        raise ValueError(f"expected at least one {layer_type.__name__} in {type(original).__name__}, found none")
    split = where[1] if len(where) > 1 else where[0]
    injection, body, trailing = layers[:split], layers[split : where[-1] + 1], layers[where[-1] + 1 :]
    first, last = body[0], layers[where[-1]]
    size = lambda layer, side: getattr(layer, f"{side}_channels", getattr(layer, f"{side}_features", None))  # noqa: E731
    if size(first, "in") != size(last, "out"):
        raise ValueError(
            f"{name or type(original).__name__}: the DEQ cell would be the layers from {type(first).__name__} "
            f"({size(first, 'in')} in) to {type(last).__name__} ({size(last, 'out')} out); a cell must keep its "
            "state's size. Include a first layer that maps to the state's size, or swap another range"
        )
    sigma: nn.Module = nn.Sequential(*trailing) if trailing else Activation(activation)
    cell = StackCell(normalize_all(nn.Sequential(*body), norm, norm_lambda), sigma)
    g: nn.Module = nn.Sequential(*injection) if injection else nn.Identity()
    return DEQBlock(g, DEQ(cell, name=name, **deq_options))


@register_block("conv_stack")
def conv_stack_block(
    original: nn.Module,
    *,
    activation: str = "softplus",
    norm: str = "spectral",
    norm_lambda: float = 2.0,
    name: str | None = None,
    **deq_options: Any,
) -> DEQBlock:
    """A Conv2d stack (layers in `nn.Sequential`s, or one conv) becomes z = σ(T(z) + g(y)), keeping its layers.

    g is the stack up to its second conv (the first conv and its activation; nothing for a
    one-conv stack), T the convs from the second to the last with the activations between them,
    weights normalised in place, each conv with its own padding and dilation; σ is what follows
    the last conv (or `activation` if nothing does).
    """
    return _stack_block(original, nn.Conv2d, activation, norm, norm_lambda, name, deq_options)


@register_block("mlp_stack")
def mlp_stack_block(
    original: nn.Module,
    *,
    activation: str = "softplus",
    norm: str = "spectral",
    norm_lambda: float = 2.0,
    name: str | None = None,
    **deq_options: Any,
) -> DEQBlock:
    """A Linear stack (or one Linear, e.g. an item of an `nn.ModuleList`) becomes z = σ(T(z) + g(y)).

    The layout and options are those of `conv_stack_block`, with Linear layers.
    """
    return _stack_block(original, nn.Linear, activation, norm, norm_lambda, name, deq_options)


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
    """An MLP stack (B, d_in) -> (B, d_out) becomes a fresh z = σ(W z + g(y)) of width d_out (equation 5).

    injection="identity": g(y) = y, the stack's input is already the injected features (needs
    d_in == d_out); injection="layer": g(y) = σ(Linear(y)), a fresh single layer (the paper's g).
    """
    _check_choice("injection", injection, INJECTIONS)
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
    """A stride-1 conv stack becomes a fresh z = σ(W * z + g(y)), W a kernel like the stack's last conv.

    injection="layer": g(y) = σ(conv(y)), a fresh conv with the stack's first conv's shape (the
    paper's table 7); injection="identity": g(y) = y.
    """
    _check_choice("injection", injection, INJECTIONS)
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
