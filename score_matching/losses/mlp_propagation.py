"""Layer access for the MLP-specific losses (curvature propagation, approximate backprop).

Those losses propagate second-order quantities backwards layer by layer, as the sliced-score-
matching code did with hand-written per-layer backward methods, so they need the network's
structure: an `nn.Sequential` (nested ones are flattened) of `nn.Linear` layers and elementwise
activations, mapping (N, D) to a log-density of shape (N, 1).
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

ELEMENTWISE_ACTIVATIONS: tuple[type[nn.Module], ...] = (
    nn.Softplus, nn.Tanh, nn.Sigmoid, nn.LogSigmoid, nn.ELU, nn.CELU, nn.SELU, nn.SiLU, nn.GELU, nn.Mish, nn.Softsign,
)


def mlp_layers(log_density_fn: nn.Module) -> list[nn.Module]:
    """The flat list of layers of an MLP log-density, checking every layer is supported."""
    if not isinstance(log_density_fn, nn.Sequential):
        raise TypeError(
            "this loss propagates curvature layer by layer and needs the log-density as an nn.Sequential "
            f"of nn.Linear and elementwise activations, got {type(log_density_fn).__name__}"
        )
    layers: list[nn.Module] = []
    for module in log_density_fn:
        if isinstance(module, nn.Sequential):
            layers += mlp_layers(module)
        elif isinstance(module, (nn.Linear, *ELEMENTWISE_ACTIVATIONS)):
            layers.append(module)
        else:
            valid = ["Linear"] + [a.__name__ for a in ELEMENTWISE_ACTIVATIONS]
            raise TypeError(f"unsupported layer {type(module).__name__} in the MLP log-density; valid: {valid}")
    if not layers:
        raise TypeError("the MLP log-density has no layers")
    return layers


def check_mlp_input(x: Tensor) -> None:
    """Raise unless x has the (batch >= 1, features) shape an MLP takes."""
    if not isinstance(x, Tensor) or x.dim() != 2 or x.shape[0] == 0:
        shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
        raise ValueError(f"an MLP log-density needs x of shape (batch >= 1, features), got {shape}")


def layer_inputs(layers: list[nn.Module], x: Tensor) -> list[Tensor]:
    """The input of every layer when the MLP runs on x of shape (N, D); checks the (N, 1) output."""
    check_mlp_input(x)
    inputs = []
    h = x
    for layer in layers:
        inputs.append(h)
        h = layer(h)
    if h.shape != (x.shape[0], 1):
        raise ValueError(f"the MLP must output a log-density of shape (N, 1), got {tuple(h.shape)}")
    return inputs


def activation_derivatives(activation: nn.Module, a: Tensor) -> tuple[Tensor, Tensor]:
    """σ'(a) and σ''(a) of an elementwise activation, differentiable with respect to a's graph."""
    with torch.enable_grad():
        a = a if a.requires_grad else a.detach().requires_grad_(True)
        (first,) = torch.autograd.grad(activation(a).sum(), a, create_graph=True)
        (second,) = torch.autograd.grad(first.sum(), a, create_graph=True, materialize_grads=True)
    return first, second
