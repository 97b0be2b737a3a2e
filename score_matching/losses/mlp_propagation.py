"""Per-layer backward steps for the structure-aware losses (curvature propagation, approximate backprop).

Those losses send the gradient g of the log-density, and second-order quantities of their own,
backwards layer by layer, as the sliced-score-matching code did with hand-written per-layer
backward methods. This module holds what they share:
- `BackwardState`: g and the loss's curvature tensors at one layer's output;
- `PropagationRule`: how one loss moves its curvature tensors through each kind of layer;
- the layer sweep through a chain of `nn.Linear` layers and elementwise activations (an MLP,
  given as an `nn.Sequential`, nested ones flattened), `sweep_layers`.
How whole log-densities (an MLP, a NICE flow) are built from such chains is in
`score_matching.losses.flow_propagation`.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor, nn

ELEMENTWISE_ACTIVATIONS: tuple[type[nn.Module], ...] = (
    nn.Softplus, nn.Tanh, nn.Sigmoid, nn.LogSigmoid, nn.ELU, nn.CELU, nn.SELU, nn.SiLU, nn.GELU, nn.Mish, nn.Softsign,
)

Curvature = tuple[Tensor, ...]


@dataclass(frozen=True)
class BackwardState:
    """What flows backwards: g = ∂ log p/∂h and a loss's curvature tensors, each of shape (N, width of h)."""

    grad: Tensor
    curvature: Curvature

    def map(self, fn: Callable[[Tensor], Tensor]) -> BackwardState:
        """fn applied to every tensor."""
        return BackwardState(fn(self.grad), tuple(fn(c) for c in self.curvature))

    def combine(self, other: BackwardState, fn: Callable[[Tensor, Tensor], Tensor]) -> BackwardState:
        """fn applied to every pair of corresponding tensors of self and other."""
        return BackwardState(
            fn(self.grad, other.grad), tuple(fn(a, b) for a, b in zip(self.curvature, other.curvature, strict=True))
        )


class PropagationRule(ABC):
    """How one loss carries its curvature tensors backwards (g itself always goes the same way)."""

    @abstractmethod
    def output(self, like: Tensor) -> Curvature:
        """The curvature tensors at a scalar log-density output; like is g = 1 there, shape (N, 1)."""

    @abstractmethod
    def scaled_identity(self, like: Tensor, scale: Tensor) -> Curvature:
        """The curvature tensors of a Hessian scale·I at h (shape of like, (N, W)); scale (N, 1) or a scalar."""

    @abstractmethod
    def rank_one_sum(self, vectors: Tensor, weights: Tensor) -> Curvature:
        """The curvature tensors of a Hessian Σ_m weights[n, m] v_m v_mᵀ, vectors (N, M, W), weights (N, M)."""

    @abstractmethod
    def linear(self, curvature: Curvature, weight: Tensor) -> Curvature:
        """Through h_out = W h_in + b (weight W of shape (out, in)); g_in = Wᵀ g_out."""

    @abstractmethod
    def scale(self, curvature: Curvature, scale: Tensor) -> Curvature:
        """Through h_out = scale ⊙ h_in (scale of shape (width,)); g_in = scale ⊙ g_out."""

    @abstractmethod
    def activation(self, curvature: Curvature, grad: Tensor, first: Tensor, second: Tensor) -> Curvature:
        """Through h = σ(a), given g at h and σ'(a), σ''(a); g_a = σ'(a) ⊙ g."""


def add_curvatures(a: Curvature, b: Curvature) -> Curvature:
    """The curvature tensors of the sum of two Hessians (independent noise, for CP), term by term."""
    return tuple(x + y for x, y in zip(a, b, strict=True))


def sum_states(states: list[BackwardState]) -> BackwardState:
    """The state of a sum of log-density terms of the same input: gradients and curvatures add."""
    total = states[0]
    for state in states[1:]:
        total = total.combine(state, torch.add)
    return total


def mlp_layers(module: nn.Module) -> list[nn.Module]:
    """The flat list of layers of an nn.Sequential MLP, checking every layer is supported."""
    if not isinstance(module, nn.Sequential):
        raise TypeError(
            f"an MLP must be an nn.Sequential of nn.Linear and elementwise activations, got {type(module).__name__}"
        )
    layers = _flatten(module)
    if not layers:
        raise TypeError("the MLP has no layers")
    return layers


def _flatten(module: nn.Sequential) -> list[nn.Module]:
    """The Linear and activation layers of module in order, nested nn.Sequentials (even empty) expanded."""
    layers: list[nn.Module] = []
    for child in module:
        if isinstance(child, nn.Sequential):
            layers += _flatten(child)
        elif isinstance(child, (nn.Linear, *ELEMENTWISE_ACTIVATIONS)):
            layers.append(child)
        else:
            valid = ["Linear"] + [a.__name__ for a in ELEMENTWISE_ACTIVATIONS]
            raise TypeError(
                f"unsupported layer {type(child).__name__}: curvature propagation and approximate backprop need "
                f"explicit nn.Linear and elementwise activation layers (valid: {valid})"
            )
    return layers


def check_mlp_input(x: Tensor) -> None:
    """Raise unless x has the (batch >= 1, features) shape an MLP takes."""
    if not isinstance(x, Tensor) or x.dim() != 2 or x.shape[0] == 0:
        shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
        raise ValueError(f"an MLP log-density needs x of shape (batch >= 1, features), got {shape}")


def layer_inputs(layers: list[nn.Module], x: Tensor) -> tuple[list[Tensor], Tensor]:
    """(the input of every layer, the output) when the layers run on x of shape (N, D)."""
    inputs = []
    h = x
    for layer in layers:
        inputs.append(h)
        h = layer(h)
    return inputs, h


def activation_derivatives(activation: nn.Module, a: Tensor) -> tuple[Tensor, Tensor]:
    """σ'(a) and σ''(a) of an elementwise activation, differentiable with respect to a's graph."""
    with torch.enable_grad():
        a = a if a.requires_grad else a.detach().requires_grad_(True)
        (first,) = torch.autograd.grad(activation(a).sum(), a, create_graph=True)
        (second,) = torch.autograd.grad(first.sum(), a, create_graph=True, materialize_grads=True)
    return first, second


def layer_backward(rule: PropagationRule, layer: nn.Module, h: Tensor, state: BackwardState) -> BackwardState:
    """The state at the input h of one Linear or activation layer, from the state at its output."""
    if isinstance(layer, nn.Linear):
        return BackwardState(state.grad @ layer.weight, rule.linear(state.curvature, layer.weight))
    first, second = activation_derivatives(layer, h)
    return BackwardState(state.grad * first, rule.activation(state.curvature, state.grad, first, second))


def sweep_layers(
    rule: PropagationRule, layers: list[nn.Module], inputs: list[Tensor], state: BackwardState
) -> BackwardState:
    """The state at the chain's input, from the state at its output and every layer's input."""
    for layer, h in zip(reversed(layers), reversed(inputs), strict=True):
        state = layer_backward(rule, layer, h, state)
    return state
