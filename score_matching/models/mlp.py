"""Fully connected building blocks whose hidden core is an addressable, swappable `nn.Sequential`.

Submodule names are a stable interface (a patch may replace a whole stack, or a slice of it,
with another module of the same input/output shape):
- `MLPStack.layers` is an `nn.Sequential` of `n_layers` (Linear, activation) pairs:
  `layers.{2i}` is the i-th Linear and `layers.{2i+1}` its activation.
- `MLP` is `in_layer` (Linear + activation, (B, in) -> (B, hidden)), then `stack` (an `MLPStack`,
  (B, hidden) -> (B, hidden)), then `out_layer` (Linear, (B, hidden) -> (B, out); nn.Identity
  when built without one), plus, when built with one, `skip` (Linear without bias, (B, in) ->
  (B, out)) from the input added to the output.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize

ACTIVATIONS = ("softplus", "tanh", "elu", "silu")
STACK_INITS = ("torch", "he")
# Initialisations applied to every Linear of a module after it is built (see `initialize_linear_layers`).
LINEAR_INITS = ("default", "fan_out_normal")


def make_activation(name: str) -> nn.Module:
    """A fresh activation module called `name`, one of `ACTIVATIONS`.

    Exact score matching differentiates the network twice, so only activations with a second
    derivative are offered (softplus is the default everywhere).
    """
    factories = {"softplus": Softplus, "tanh": nn.Tanh, "elu": nn.ELU, "silu": nn.SiLU}
    if name not in factories:
        raise ValueError(f"unknown activation {name!r}; valid: {list(ACTIVATIONS)}")
    return factories[name]()


# nn.Softplus returns x above its threshold; at 40, log(1 + eˣ) = x to within e⁻⁴⁰ ≈ 4e-18, so the
# value is exact in float64 as well, and exp is never taken where float32 would overflow (x > 88).
SOFTPLUS_THRESHOLD = 40.0


class Softplus(nn.Softplus):
    """nn.Softplus with threshold `SOFTPLUS_THRESHOLD` instead of 20: log(1 + eˣ) exactly.

    Its derivatives are finite for every x (a bare logaddexp(x, 0) has NaN second derivatives
    below x ≈ −88 in float32, which turned a DKEF's α into NaN through forward-mode Laplacians),
    vmap batches its double backward (torch 2.14), so the batched Hessian trace of exact score
    matching runs batched, and its double-backward graph is lean.
    """

    def __init__(self) -> None:
        super().__init__(beta=1.0, threshold=SOFTPLUS_THRESHOLD)


def check_int(name: str, value: int, minimum: int) -> None:
    """Raise a ValueError naming `name` unless `value` is an int >= `minimum`."""
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")


class MLPStack(nn.Module):
    """`n_layers` (Linear + activation) layers held in the `nn.Sequential` named `layers`.

    Maps (B, in_features) -> (B, hidden); the first Linear is in_features -> hidden, the others
    hidden -> hidden. With n_layers = 0 it is the identity (and in_features must equal hidden).

    `init` (see STACK_INITS): "torch", nn.Linear's default; "he", weights N(0, 2/fan_in) and zero
    biases, which keeps a deep softplus stack's features varying: under the default, a 14-layer
    width-30 stack maps all inputs to nearly one point (feature spread ~1e-6) and its DKEF gets a
    zero gradient.
    """

    def __init__(
        self, in_features: int, hidden: int, n_layers: int, activation: str = "softplus", init: str = "torch"
    ) -> None:
        super().__init__()
        if init not in STACK_INITS:
            raise ValueError(f"unknown MLP stack init {init!r}; valid: {list(STACK_INITS)}")
        check_int("in_features", in_features, 1)
        check_int("hidden", hidden, 1)
        check_int("n_layers", n_layers, 0)
        if n_layers == 0 and in_features != hidden:
            raise ValueError(
                f"an MLPStack with n_layers=0 is the identity, so in_features ({in_features}) "
                f"must equal hidden ({hidden})"
            )
        modules: list[nn.Module] = []
        for i in range(n_layers):
            linear = nn.Linear(in_features if i == 0 else hidden, hidden)
            if init == "he":
                nn.init.normal_(linear.weight, std=math.sqrt(2.0 / linear.in_features))
                nn.init.zeros_(linear.bias)
            modules += [linear, make_activation(activation)]
        self.in_features = in_features
        self.hidden = hidden
        self.n_layers = n_layers
        self.layers = nn.Sequential(*modules)

    def forward(self, x: Tensor) -> Tensor:
        """Apply the stack: (B, in_features) -> (B, hidden)."""
        return self.layers(x)


class MLP(nn.Module):
    """`in_layer` (Linear + activation) -> `stack` (`MLPStack`) -> `out_layer` (Linear), + `skip`.

    `depth` counts the activated hidden layers of width `hidden`: the in_layer plus depth - 1 in
    the stack, so the net has depth + 1 Linear layers (what papers call a "(depth+1)-layer MLP").
    `out_layer=False` leaves the stack's output as it is (out_features must equal hidden);
    `skip=True` adds a bias-free Linear of the input to the output, as the DKEF code's feature
    nets (their `add_skip`).
    """

    def __init__(
        self,
        in_features: int,
        hidden: int,
        out_features: int,
        depth: int,
        activation: str = "softplus",
        stack_init: str = "torch",
        out_layer: bool = True,
        skip: bool = False,
    ) -> None:
        super().__init__()
        check_int("in_features", in_features, 1)
        check_int("hidden", hidden, 1)
        check_int("out_features", out_features, 1)
        check_int("depth", depth, 1)
        if not out_layer and out_features != hidden:
            raise ValueError(
                f"an MLP without out_layer outputs its hidden width, so out_features ({out_features}) must "
                f"equal hidden ({hidden})"
            )
        self.in_layer = nn.Sequential(nn.Linear(in_features, hidden), make_activation(activation))
        self.stack = MLPStack(hidden, hidden, depth - 1, activation, stack_init)
        self.out_layer = nn.Linear(hidden, out_features) if out_layer else nn.Identity()
        self.skip = nn.Linear(in_features, out_features, bias=False) if skip else None

    def forward(self, x: Tensor) -> Tensor:
        """(B, in_features) -> (B, out_features)."""
        out = self.out_layer(self.stack(self.in_layer(x)))
        return out if self.skip is None else out + self.skip(x)

    def as_sequential(self) -> nn.Sequential:
        """The same function as one nn.Sequential sharing this MLP's modules (nothing is copied).

        An `MLPStack` contributes its `layers`; a stack a patch swapped in stays one opaque module.
        An MLP with a skip is not a chain of layers and raises a TypeError.
        """
        if self.skip is not None:
            raise TypeError("an MLP with a skip connection is not a chain of layers (no nn.Sequential form)")
        stack = self.stack.layers if isinstance(self.stack, MLPStack) else self.stack
        return nn.Sequential(self.in_layer, stack, self.out_layer)


def initialize_linear_layers(module: nn.Module, init: str) -> None:
    """Re-initialises every nn.Linear inside `module` in place, as named by `init` (`LINEAR_INITS`).

    "default" leaves them; "fan_out_normal" draws weights and biases from N(0, 1/fan_out), the
    DKEF reference code's initialisation. A weight under a torch parametrisation (e.g. a weight
    normalisation) has its stored original re-drawn.
    """
    if init not in LINEAR_INITS:
        raise ValueError(f"unknown linear-layer init {init!r}; valid: {list(LINEAR_INITS)}")
    if init == "default":
        return
    with torch.no_grad():
        for layer in module.modules():
            if not isinstance(layer, nn.Linear):
                continue
            std = 1.0 / math.sqrt(layer.out_features)
            weight = layer.parametrizations.weight.original if parametrize.is_parametrized(layer, "weight") else layer.weight
            weight.normal_(0.0, std)
            if layer.bias is not None:
                layer.bias.normal_(0.0, std)
