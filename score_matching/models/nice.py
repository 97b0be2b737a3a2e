"""NICE (Dinh et al., 2015) on flattened images: additive couplings, a diagonal scaling, a Gaussian prior.

    h = c_K ∘ … ∘ c_1(x),   z = exp(s) ⊙ h,   log p(x) = log N(z; 0, I) + Σ_i s_i   (exact).
Coupling c_k keeps the coordinates of one parity (even indices for even k, odd ones for odd k) and
adds m_k(kept) to the others, so its Jacobian determinant is 1. The prior is the standard Gaussian,
as in the sliced-score-matching code this reproduces (the NICE paper used a logistic prior on MNIST).

Submodule names are stable; a patch may swap each `stack` for a module of the same shapes:
    couplings.{k}.net.in_layer   Linear(D_keep -> hidden) + activation   (B, D_keep) -> (B, hidden)
    couplings.{k}.net.stack      MLPStack of depth − 1 layers              (B, hidden) -> (B, hidden)
    couplings.{k}.net.out_layer  Linear(hidden -> D_update)              (B, hidden) -> (B, D_update)
where D_keep = ⌈D/2⌉ for even k and ⌊D/2⌋ for odd k (both 392 for MNIST), D_update = D − D_keep.
`propagation_steps()` describes the flow to the layer-by-layer losses (CP, approx-BP); they need the
stacks' explicit Linear and activation layers and raise a TypeError for a swapped-in stack.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from score_matching.losses.flow_propagation import (
    AdditiveCouplingStep,
    DiagonalScaleStep,
    Head,
    GaussianHead,
    Step,
)
from score_matching.models import register_model
from score_matching.models.mlp import MLP, check_int


class AdditiveCoupling(nn.Module):
    """y = x except y[update] = x[update] + net(x[keep]); keep = indices of the given parity (0 or 1)."""

    def __init__(self, features: int, parity: int, hidden: int, depth: int, activation: str = "softplus") -> None:
        super().__init__()
        if parity not in (0, 1):
            raise ValueError(f"parity must be 0 (keep even indices) or 1 (keep odd indices), got {parity!r}")
        index = torch.arange(features)
        keep, update = index[index % 2 == parity], index[index % 2 != parity]
        # Derived from `features`, so kept out of the state dict.
        self.register_buffer("keep_index", keep, persistent=False)
        self.register_buffer("update_index", update, persistent=False)
        self.net = MLP(len(keep), hidden, len(update), depth, activation)

    def forward(self, x: Tensor) -> Tensor:
        """The coupling, (B, features) -> (B, features)."""
        return x.index_add(1, self.update_index, self.net(x[:, self.keep_index]))

    def inverse(self, y: Tensor) -> Tensor:
        """The inverse coupling: subtracts the same shift, since the kept coordinates are unchanged."""
        return y.index_add(1, self.update_index, self.net(y[:, self.keep_index]), alpha=-1)

    def propagation_step(self) -> AdditiveCouplingStep:
        """This coupling as a step of the layer-by-layer losses (CP, approx-BP).

        Raises a TypeError if `net` holds a module other than Linear layers and elementwise
        activations (e.g. a stack swapped for a DEQ block), which those losses cannot sweep through.
        """
        return AdditiveCouplingStep(self.keep_index, self.update_index, self.net.as_sequential())


@register_model("nice")
class NICE(nn.Module):
    """NICE flow; forward(x) -> exact log p(x) of shape (B,).

    Args (defaults: the paper's MNIST model, taken from the sliced-score-matching code):
        in_features: data dimension D (784 = 28·28).
        hidden: width of the coupling MLPs (1000).
        n_couplings: number of additive couplings, alternating even/odd (4).
        depth: activated hidden layers per coupling MLP, in_layer included (4, i.e. 5 Linear
            layers and about 15M parameters in all, as the paper's Table 4).
        activation: activation of the coupling MLPs (see `score_matching.models.mlp.ACTIVATIONS`).
    """

    def __init__(
        self,
        in_features: int = 784,
        hidden: int = 1000,
        n_couplings: int = 4,
        depth: int = 4,
        activation: str = "softplus",
    ) -> None:
        super().__init__()
        check_int("in_features", in_features, 2)
        check_int("n_couplings", n_couplings, 1)
        self.in_features = in_features
        self.couplings = nn.ModuleList(
            AdditiveCoupling(in_features, k % 2, hidden, depth, activation) for k in range(n_couplings)
        )
        self.log_scale = nn.Parameter(torch.zeros(in_features))

    def transform(self, x: Tensor) -> Tensor:
        """The flow x -> z, (B, D) -> (B, D)."""
        self._check_input(x, "x")
        for coupling in self.couplings:
            x = coupling(x)
        return x * torch.exp(self.log_scale)

    def inverse(self, z: Tensor) -> Tensor:
        """The inverse flow z -> x, (B, D) -> (B, D)."""
        self._check_input(z, "z")
        h = z * torch.exp(-self.log_scale)
        for coupling in reversed(self.couplings):
            h = coupling.inverse(h)
        return h

    def forward(self, x: Tensor) -> Tensor:
        """log p(x) = log N(z; 0, I) + Σ s with z = transform(x), shape (B,)."""
        z = self.transform(x)
        log_prior = -0.5 * z.pow(2).sum(-1) - 0.5 * self.in_features * math.log(2 * math.pi)
        return log_prior + self.log_scale.sum()

    def propagation_steps(self) -> list[Step | Head]:
        """forward's log p as steps of the layer-by-layer losses (CP, approx-BP), in forward order.

        The couplings, the scaling z = exp(s) ⊙ h and the Gaussian prior; Σ s and the prior's
        normaliser are constant in x. See `score_matching.losses.flow_propagation`.
        """
        couplings: list[Step | Head] = [coupling.propagation_step() for coupling in self.couplings]
        return couplings + [DiagonalScaleStep(torch.exp(self.log_scale)), GaussianHead()]

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """n samples x = inverse(z), z ~ N(0, I), shape (n, D), without a graph.

        `generator` must live on the model's device.
        """
        check_int("n", n, 1)
        z = torch.randn(
            n, self.in_features, generator=generator, device=self.log_scale.device, dtype=self.log_scale.dtype
        )
        return self.inverse(z)

    def _check_input(self, x: Tensor, name: str) -> None:
        if x.dim() != 2 or x.shape[1] != self.in_features:
            raise ValueError(f"{name} must have shape (batch, {self.in_features}), got {tuple(x.shape)}")
