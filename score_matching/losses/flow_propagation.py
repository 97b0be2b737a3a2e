"""Whole log-densities for the structure-aware losses: the steps a backward sweep runs through.

A log-density is a list of steps in forward order: invertible steps x → h, then a head h → log p:
    AdditiveCouplingStep(keep, update, net)  h_out = h, except h_out[update] = h[update] + net(h[keep])
    DiagonalScaleStep(scale)                 h_out = scale ⊙ h
    MLPHead(net)                             log p = net(h), an nn.Sequential MLP with output (N, 1)
    GaussianHead(std)                        log p = log N(h; 0, std² I)
    KernelExpansionHead(net, w, c, σ²)       log p = Σ_m c_m exp(−‖net(h) − w_m‖²/2σ²) (a DKEF kernel)
    SumHead(heads)                           log p = Σ_i head_i(h)
An nn.Sequential is the one-step list [MLPHead(it)]; any other model declares its list by a
`propagation_steps()` method (NICE: its couplings, its scaling, its Gaussian prior; DKEF: one
SumHead of its base density and its kernels). Terms
that add only a constant to log p (the scaling's log-determinant) need no place in the sweep.

Backwards, with g = ∂ log p/∂h and a rule's curvature tensors (`PropagationRule`):
    Gaussian head:  g = −z/std², curvature from a Hessian of −I/std² (rule.scaled_identity)
    kernel head:    g and the dense Hessian at net's output (rule.scaled_identity plus
                    rule.rank_one_sum), then the layer sweep through net
    sum of heads:   the heads' states add
    MLP head:       g = 1, rule.output at the scalar, then the layer sweep through net
    scaling:        g ← scale ⊙ g, curvature by rule.scale
    coupling:       the update part of every tensor is swept through net and added to the kept
                    part: g_keep = g_out,keep + J_netᵀ g_out,update, g_update = g_out,update. This is
                    the exact chain rule for g and for CP's S (Jᵀ S plus fresh noise at net's
                    activations); approx-BP's d also drops the kept/update cross curvature here.
"""
from __future__ import annotations

from abc import ABC, abstractmethod

import torch
from torch import Tensor, nn

from score_matching.losses.mlp_propagation import (
    BackwardState,
    PropagationRule,
    add_curvatures,
    check_mlp_input,
    layer_inputs,
    mlp_layers,
    sum_states,
    sweep_layers,
)


class Head(ABC):
    """The last step, h → log p: it starts the backward sweep."""

    @abstractmethod
    def start(self, rule: PropagationRule, h: Tensor) -> BackwardState:
        """The state at h."""


class Step(ABC):
    """An invertible step h → h_out of the same batch size."""

    @abstractmethod
    def forward(self, h: Tensor) -> tuple[Tensor, list[Tensor]]:
        """(h_out, what `backward` needs saved)."""

    @abstractmethod
    def backward(self, rule: PropagationRule, state: BackwardState, saved: list[Tensor]) -> BackwardState:
        """The state at h, from the state at h_out."""


class MLPHead(Head):
    """log p = net(h) for an nn.Sequential of Linear layers and elementwise activations."""

    def __init__(self, net: nn.Sequential) -> None:
        self.layers = mlp_layers(net)

    def start(self, rule: PropagationRule, h: Tensor) -> BackwardState:
        inputs, out = layer_inputs(self.layers, h)
        if out.shape != (h.shape[0], 1):
            raise ValueError(f"the MLP must output a log-density of shape (N, 1), got {tuple(out.shape)}")
        grad = torch.ones_like(out)
        return sweep_layers(rule, self.layers, inputs, BackwardState(grad, rule.output(grad)))


class GaussianHead(Head):
    """log p = log N(h; 0, std² I) = −‖h‖²/(2 std²) + const."""

    def __init__(self, std: float = 1.0) -> None:
        self.variance = float(std) ** 2

    def start(self, rule: PropagationRule, h: Tensor) -> BackwardState:
        return BackwardState(-h / self.variance, rule.scaled_identity(h, torch.tensor(-1.0 / self.variance)))


class KernelExpansionHead(Head):
    """log p = Σ_m c_m exp(−‖net(h) − w_m‖² / (2σ²)), net an nn.Sequential MLP with output (N, L).

    centres w: (M, L); coefficients c: (M,); variance σ²: a scalar tensor. With u = net(h),
    δ_m = u − w_m and k_m = exp(−‖δ_m‖²/2σ²), the gradient at u is −Σ_m c_m k_m δ_m/σ² and the
    Hessian Σ_m (c_m k_m/σ⁴) δ_m δ_mᵀ − (Σ_m c_m k_m/σ²) I, handed to the rule, then swept through net.
    """

    def __init__(self, net: nn.Sequential, centres: Tensor, coefficients: Tensor, variance: Tensor) -> None:
        self.layers = mlp_layers(net)
        self.centres, self.coefficients, self.variance = centres, coefficients, variance

    def start(self, rule: PropagationRule, h: Tensor) -> BackwardState:
        inputs, u = layer_inputs(self.layers, h)
        if u.dim() != 2 or u.shape[1] != self.centres.shape[1]:
            raise ValueError(f"the feature net must output (N, {self.centres.shape[1]}), got {tuple(u.shape)}")
        delta = u.unsqueeze(1) - self.centres  # (N, M, L)
        weighted = self.coefficients * torch.exp(-delta.pow(2).sum(-1) / (2 * self.variance))  # c_m k_m, (N, M)
        grad = -torch.einsum("nm,nml->nl", weighted, delta) / self.variance
        curvature = add_curvatures(
            rule.scaled_identity(u, -weighted.sum(1, keepdim=True) / self.variance),
            rule.rank_one_sum(delta, weighted / self.variance**2),
        )
        return sweep_layers(rule, self.layers, inputs, BackwardState(grad, curvature))


class SumHead(Head):
    """log p = Σ_i head_i(h): several heads of the same input, whose states add."""

    def __init__(self, heads: list[Head]) -> None:
        if not heads:
            raise ValueError("SumHead needs at least one head")
        self.heads = heads

    def start(self, rule: PropagationRule, h: Tensor) -> BackwardState:
        return sum_states([head.start(rule, h) for head in self.heads])


class DiagonalScaleStep(Step):
    """h_out = scale ⊙ h, scale of shape (D,)."""

    def __init__(self, scale: Tensor) -> None:
        self.scale = scale

    def forward(self, h: Tensor) -> tuple[Tensor, list[Tensor]]:
        return h * self.scale, []

    def backward(self, rule: PropagationRule, state: BackwardState, saved: list[Tensor]) -> BackwardState:
        return BackwardState(state.grad * self.scale, rule.scale(state.curvature, self.scale))


class AdditiveCouplingStep(Step):
    """h_out = h except h_out[:, update] = h[:, update] + net(h[:, keep]); net an nn.Sequential MLP."""

    def __init__(self, keep_index: Tensor, update_index: Tensor, net: nn.Sequential) -> None:
        self.keep_index, self.update_index = keep_index, update_index
        self.layers = mlp_layers(net)

    def forward(self, h: Tensor) -> tuple[Tensor, list[Tensor]]:
        inputs, shift = layer_inputs(self.layers, h[:, self.keep_index])
        return h.index_add(1, self.update_index, shift), inputs

    def backward(self, rule: PropagationRule, state: BackwardState, saved: list[Tensor]) -> BackwardState:
        through_net = sweep_layers(rule, self.layers, saved, state.map(lambda t: t[:, self.update_index]))
        return state.combine(through_net, lambda out, add: out.index_add(1, self.keep_index, add))


def log_density_steps(log_density_fn: nn.Module) -> tuple[list[Step], Head]:
    """The steps and head of an nn.Sequential MLP or of a model with `propagation_steps()`."""
    if isinstance(log_density_fn, nn.Sequential):
        return [], MLPHead(log_density_fn)
    declare = getattr(log_density_fn, "propagation_steps", None)
    if not callable(declare):
        raise TypeError(
            "this loss propagates curvature layer by layer and needs the log-density as an nn.Sequential of "
            "nn.Linear and elementwise activations, or a model with propagation_steps() such as NICE, "
            f"got {type(log_density_fn).__name__}"
        )
    *steps, head = declare()
    if not isinstance(head, Head) or not all(isinstance(step, Step) for step in steps):
        raise TypeError(f"{type(log_density_fn).__name__}.propagation_steps() must list Steps, then a Head")
    return steps, head


def backward_sweep(rule: PropagationRule, log_density_fn: nn.Module, x: Tensor) -> BackwardState:
    """The state at x (N, D): g = ∇_x log p and the rule's curvature tensors, each (N, D)."""
    check_mlp_input(x)
    steps, head = log_density_steps(log_density_fn)
    caches, h = [], x
    for step in steps:
        h, cache = step.forward(h)
        caches.append(cache)
    state = head.start(rule, h)
    for step, cache in zip(reversed(steps), reversed(caches), strict=True):
        state = step.backward(rule, state, cache)
    return state
