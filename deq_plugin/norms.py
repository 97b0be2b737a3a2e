"""Weight normalisation that keeps a DEQ cell contractive, applied as a reparametrisation.

Both options are `torch.nn.utils.parametrize` parametrisations: the stored parameter is the raw
weight, the normalised weight is recomputed on every forward, and gradients flow through the
normalisation.

- `frobenius` (the paper's): W / (λ (||W||_F + ε)). Guarantee: ||W||_2 <= ||W||_F / (λ ||W||_F)
  < 1/λ for a *matrix*. For a convolution the Frobenius norm of the kernel does NOT bound the
  operator norm (a k×k kernel can amplify by up to k·||K||_F), so the bound holds only for dense
  layers.
- `spectral`: W / (λ σ(W)), with σ(W) the operator norm of the layer itself — for a convolution the
  linear map on (C, H, W) images, zero padding and stride included — estimated by power iteration
  on that operator. Guarantee: ||W||_op = 1/λ up to the power-iteration error; the iteration is
  warm-started and refreshed by `refresh_spectral_norms` before each training forward of a DEQ,
  so the estimate tracks the weights as they train.

With a 1-Lipschitz activation (softplus, ELU, tanh) and λ > 1 either option makes z ↦ σ(Wz + u)
a contraction, so the fixed point exists, is unique and Picard iteration converges.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils import parametrize

NORMS = ("none", "frobenius", "spectral")


def _check_lambda(lam: float) -> None:
    if not lam > 1:
        raise ValueError(f"normalisation λ must be > 1 for a contraction, got {lam}")


class FrobeniusNorm(nn.Module):
    """Parametrisation W -> W / (λ (||W||_F + ε))."""

    def __init__(self, lam: float = 2.0, eps: float = 1e-6) -> None:
        super().__init__()
        _check_lambda(lam)
        self.lam, self.eps = lam, eps

    def forward(self, weight: Tensor) -> Tensor:
        # Not weight.norm(): its derivative formulas, nested as forward mode inside reverse mode (a
        # DEQ with implicit gradients under DKEF's nested jvp), trip autograd's in-place check.
        return weight / (self.lam * (weight.square().sum().sqrt() + self.eps))


class SpectralNorm(nn.Module):
    """Parametrisation W -> W / (λ σ(W)), σ the operator norm of the Linear or Conv2d layer.

    The power-iteration vector `v` (unit norm, the layer's input shape with batch 1) is built by
    `refresh_spectral_norms` with `init_iterations` steps whenever it is missing or its shape
    changes, then refined by one step per training call. It is saved in the state dict, so a run
    resumed from a checkpoint continues with the same estimate (its losses equal an uninterrupted
    run's); a state dict without it, or with another shape, loads too, and v is rebuilt on use.
    """

    def __init__(self, layer: nn.Module, lam: float = 2.0, n_power_iterations: int = 1, init_iterations: int = 50) -> None:
        super().__init__()
        _check_lambda(lam)
        if isinstance(layer, nn.Conv2d):
            if layer.stride != (1, 1) or layer.padding_mode != "zeros" or layer.groups != 1:
                raise ValueError(
                    "spectral normalisation supports stride-1, zero-padded, ungrouped Conv2d layers "
                    f"(the state keeps its spatial size inside a DEQ cell), got {layer}"
                )
            self.conv_args = {"padding": layer.padding, "dilation": layer.dilation}
        elif isinstance(layer, nn.Linear):
            self.conv_args = None
        else:
            raise TypeError(f"spectral normalisation supports nn.Linear and nn.Conv2d, got {type(layer).__name__}")
        self.lam = lam
        self.n_power_iterations = n_power_iterations
        self.init_iterations = init_iterations
        self.register_buffer("v", torch.empty(0))

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs):
        # v's shape follows the state's spatial size, so take a saved v as it is (or none: rebuilt on use).
        saved = state_dict.pop(prefix + "v", None)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs)
        missing_keys[:] = [key for key in missing_keys if key != prefix + "v"]
        self.v = saved.to(self.v.device) if saved is not None else torch.empty(0, device=self.v.device)

    def operator(self, weight: Tensor, x: Tensor) -> Tensor:
        """The layer's linear map (no bias) applied to x."""
        if self.conv_args is None:
            return x @ weight.t()
        return F.conv2d(x, weight, **self.conv_args)

    def adjoint(self, weight: Tensor, y: Tensor) -> Tensor:
        """The transpose of `operator` applied to y (stride 1, so the sizes match)."""
        if self.conv_args is None:
            return y @ weight
        return F.conv_transpose2d(y, weight, **self.conv_args)

    def input_shape(self, weight: Tensor, spatial: tuple[int, ...]) -> tuple[int, ...]:
        """Shape (1, ...) of one input of this layer for a state of the given spatial size."""
        return (1, weight.shape[1]) if self.conv_args is None else (1, weight.shape[1], *spatial[-2:])

    @torch.no_grad()
    def power_iteration(self, weight: Tensor, spatial: tuple[int, ...]) -> None:
        """Updates v toward the top right-singular vector of the operator (initialising if needed)."""
        shape = self.input_shape(weight, spatial)
        steps = self.n_power_iterations
        if tuple(self.v.shape) != shape:
            generator = torch.Generator().manual_seed(0)
            v = torch.randn(shape, generator=generator, dtype=weight.dtype).to(weight.device)
            self.v = v / v.norm()
            steps = self.init_iterations
        v = self.v
        for _ in range(steps):
            v = self.adjoint(weight, self.operator(weight, v))
            v = v / v.norm().clamp_min(torch.finfo(v.dtype).tiny)
        self.v = v

    def forward(self, weight: Tensor) -> Tensor:
        if self.v.numel() == 0:
            raise RuntimeError("spectral norm not initialised: call refresh_spectral_norms(module, state_shape) first")
        sigma = self.operator(weight, self.v.to(weight.dtype)).norm()
        return weight / (self.lam * sigma)


def normalize_weight(layer: nn.Module, kind: str, lam: float = 2.0, **options) -> nn.Module:
    """Registers the `kind` normalisation ("none", "frobenius" or "spectral") on layer.weight."""
    if kind == "none":
        return layer
    if kind == "frobenius":
        parametrize.register_parametrization(layer, "weight", FrobeniusNorm(lam, **options))
    elif kind == "spectral":
        # unsafe: the estimate needs the state's spatial size, known only at the first DEQ forward.
        parametrize.register_parametrization(layer, "weight", SpectralNorm(layer, lam, **options), unsafe=True)
    else:
        raise ValueError(f"unknown weight normalisation {kind!r}; valid: {list(NORMS)}")
    return layer


def normalize_all(module: nn.Module, kind: str, lam: float = 2.0, **options) -> nn.Module:
    """Applies `normalize_weight` to every Linear and Conv2d inside `module`."""
    for layer in list(module.modules()):
        if isinstance(layer, (nn.Linear, nn.Conv2d)) and not parametrize.is_parametrized(layer, "weight"):
            normalize_weight(layer, kind, lam, **options)
    return module


def refresh_spectral_norms(module: nn.Module, state_shape: torch.Size, update: bool = True) -> None:
    """Runs power iteration for every spectral parametrisation in `module`.

    `state_shape` is the DEQ state's shape; convolutions are assumed to act at its spatial size.
    With `update=False` only missing or mis-shaped estimates are (re)built, so eval is deterministic.
    """
    spatial = tuple(state_shape[2:])
    for layer in module.modules():
        if not parametrize.is_parametrized(layer, "weight"):
            continue
        for norm in layer.parametrizations.weight:
            if isinstance(norm, SpectralNorm):
                weight = layer.parametrizations.weight.original
                if update or tuple(norm.v.shape) != norm.input_shape(weight, spatial):
                    norm.power_iteration(weight.detach(), spatial)
