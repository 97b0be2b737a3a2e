"""Deep kernel exponential family (DKEF; Wenliang et al., 2019) fitted by score matching.

Model:
    log p̃(x) = f(x) + log q0(x),   q0 = N(0, q0_std² I), normalised (so p̃ = q0 when α = 0),
    f(x) = Σ_m α_m k(x, z_m),      k(x, z) = Σ_r ρ_r exp(−‖φ_r(x) − φ_r(z)‖² / (2σ_r²)),
with ρ = softmax(`kernel_logits`), σ_r = exp(`log_bandwidths`[r]), trainable inducing points z_m
(`inducing_points`, drawn from data by `init_inducing_points`) and α solved in closed form from
data (`DKEF.alpha_moments`, `DKEF.solve_alpha`); the ridge is λ = 10^`log10_lambda`.

Submodule names are stable; a patch may swap each `stack` for a module of the same shapes:
    features.{r}.in_layer   Linear(d -> hidden) + activation   (B, d) -> (B, hidden)
    features.{r}.stack      MLPStack of depth − 1 layers        (B, hidden) -> (B, hidden)
    features.{r}.out_layer  Linear(hidden -> latent)            (B, hidden) -> (B, latent)
    features.{r}.skip       Linear(d -> latent), no bias        (B, d) -> (B, latent), added (optional)
for r = 0 .. n_kernels − 1 (without out_layer, nn.Identity and latent = hidden). When α is fitted each φ_r sees N·n_inducing rows at once.
"""
from __future__ import annotations

import functools
import math
from typing import Callable, Sequence

import torch
from torch import Tensor, nn
from torch.func import jvp

from score_matching.losses.common import ScoreFn, score_from_log_density
from score_matching.losses.flow_propagation import GaussianHead, Head, KernelExpansionHead, SumHead
from score_matching.models import register_model
from score_matching.models.mlp import MLP, check_int


@register_model("dkef")
class DKEF(nn.Module):
    """DKEF log-density model; forward(x, alpha=None) -> log p̃(x) of shape (B,).

    Args (defaults follow the paper and the sliced-score-matching code it reused):
        in_features: data dimension d.
        n_inducing: number M of inducing points z_m (200).
        n_kernels: number of kernels / feature nets φ_r (3).
        hidden: width of φ_r's hidden layers (30).
        depth: activated hidden layers of φ_r, in_layer included (2, i.e. 3 Linear layers: the
            reference code's φ; a paper "k-layer" DKEF is depth = k − 1).
        latent: output width of φ_r (64 for UCI; the paper uses 200 for its Gaussians).
        q0_std: standard deviation of the base density q0 (2.0).
        init_bandwidths: initial σ_r, one per kernel; the default σ_r² = 10^0, 10^0.52, 10^1 are
            the reference code's starting values.
        init_log10_lambda: initial log10 of the ridge λ (−2.0, as the reference code).
        activation: activation of φ_r (see `score_matching.models.mlp.ACTIVATIONS`).
        stack_init: initialisation of φ_r's hidden stack (`score_matching.models.mlp.STACK_INITS`);
            "he" by default, since under nn.Linear's default the 8- and 16-layer nets start with
            constant features and a zero gradient.
        out_layer: whether φ_r ends in a Linear to `latent` outputs (the sliced-score-matching
            code's); without it φ_r outputs its hidden state and latent must equal hidden (the
            paper authors' DEQ code).
        skip: add a bias-free Linear of x to φ_r's output (the DKEF codes' `add_skip`).
    """

    def __init__(
        self,
        in_features: int,
        n_inducing: int = 200,
        n_kernels: int = 3,
        hidden: int = 30,
        depth: int = 2,
        latent: int = 64,
        q0_std: float = 2.0,
        init_bandwidths: Sequence[float] = (1.0, 1.817, 3.162),
        init_log10_lambda: float = -2.0,
        activation: str = "softplus",
        stack_init: str = "he",
        out_layer: bool = True,
        skip: bool = False,
    ) -> None:
        super().__init__()
        check_int("in_features", in_features, 1)
        check_int("n_inducing", n_inducing, 1)
        check_int("n_kernels", n_kernels, 1)
        if not q0_std > 0:
            raise ValueError(f"q0_std must be > 0, got {q0_std!r}")
        bandwidths = torch.as_tensor(init_bandwidths, dtype=torch.get_default_dtype())
        if bandwidths.shape != (n_kernels,) or not bool((bandwidths > 0).all()):
            raise ValueError(
                f"init_bandwidths must be {n_kernels} positive numbers (one per kernel), got {init_bandwidths!r}"
            )
        self.in_features = in_features
        self.n_inducing = n_inducing
        self.q0_std = float(q0_std)
        self.features = nn.ModuleList(
            MLP(in_features, hidden, latent, depth, activation, stack_init, out_layer, skip) for _ in range(n_kernels)
        )
        self.kernel_logits = nn.Parameter(torch.zeros(n_kernels))
        self.log_bandwidths = nn.Parameter(bandwidths.log())
        self.log10_lambda = nn.Parameter(torch.tensor(float(init_log10_lambda)))
        self.inducing_points = nn.Parameter(torch.zeros(n_inducing, in_features))
        self.register_buffer("alpha", torch.zeros(n_inducing))
        self.register_buffer("inducing_ready", torch.tensor(False))

    @property
    def ridge(self) -> Tensor:
        """The ridge λ = 10^log10_lambda."""
        return torch.pow(10.0, self.log10_lambda)

    @torch.no_grad()
    def init_inducing_points(self, x: Tensor, generator: torch.Generator | None = None) -> None:
        """Set the inducing points to n_inducing distinct rows of x, drawn uniformly."""
        self._check_input(x, "x")
        if x.shape[0] < self.n_inducing:
            raise ValueError(f"need at least n_inducing={self.n_inducing} rows of x, got {x.shape[0]}")
        device = generator.device if generator is not None else torch.device("cpu")
        rows = torch.randperm(x.shape[0], generator=generator, device=device)[: self.n_inducing]
        self.inducing_points.copy_(x[rows.to(x.device)])
        self.inducing_ready.fill_(True)

    def log_q0(self, x: Tensor) -> Tensor:
        """log N(x; 0, q0_std² I), shape (B,)."""
        variance = self.q0_std**2
        return -0.5 * x.pow(2).sum(-1) / variance - 0.5 * self.in_features * math.log(2 * math.pi * variance)

    def kernel_matrix(self, x: Tensor) -> Tensor:
        """k(x_b, z_m), shape (B, M)."""
        self._check_input(x, "x")
        return self._kernel_values(x, paired=False)

    def kernel_expansion(self, x: Tensor, alpha: Tensor | None = None) -> Tensor:
        """f(x) = Σ_m α_m k(x, z_m), shape (B,); the stored `alpha` buffer unless alpha is given."""
        return self.kernel_matrix(x) @ self._alpha_or_stored(alpha)

    def forward(self, x: Tensor, alpha: Tensor | None = None) -> Tensor:
        """log p̃(x) = f(x) + log q0(x), shape (B,); the stored `alpha` unless alpha is given."""
        return self.kernel_expansion(x, alpha) + self.log_q0(x)

    def score(self, x: Tensor, alpha: Tensor | None = None) -> Tensor:
        """∇_x log p̃(x), shape (B, d), by reverse-mode autograd with a graph for further derivatives.

        If x requires grad the score stays a function of x itself, so a loss can differentiate it
        again (see `score_matching.losses.common.score_from_log_density`).
        """
        return score_from_log_density(functools.partial(self, alpha=alpha))(x)

    def propagation_steps(self, alpha: Tensor | None = None) -> list[Head]:
        """log p̃ for the layer-by-layer losses (CP, approx-BP): one SumHead of q0 and the kernels.

        Kernel r is a `KernelExpansionHead` of φ_r (as an nn.Sequential), centres φ_r(z_m),
        coefficients ρ_r α and variance σ_r², under the stored α unless alpha is given. A stack a
        patch swapped in (e.g. a DEQ) has no explicit layers, and those losses raise a TypeError.
        """
        weights, variances = self._kernel_weights_and_variances()
        alpha = self._alpha_or_stored(alpha)
        kernels = [
            KernelExpansionHead(net.as_sequential(), net(self.inducing_points), weights[r] * alpha, variances[r])
            for r, net in enumerate(self.features)
        ]
        return [SumHead([GaussianHead(self.q0_std), *kernels])]

    def alpha_moments(self, x: Tensor, create_graph: bool = True) -> tuple[Tensor, Tensor]:
        """The moments (G, b) of the exact score-matching loss in α on the sample x of shape (N, d).

        With s(x) = ∇ log p̃(x) = Σ_m α_m ∇k(x, z_m) + ∇ log q0(x), the exact SM loss
            J(α) = 1/N Σ_n [½‖s(x_n)‖² + Σ_d ∂_d s_d(x_n)] = ½ αᵀGα + αᵀb + const,
            G_mm' = 1/N Σ_n Σ_d ∂_d k(x_n, z_m) ∂_d k(x_n, z_m'),
            b_m   = 1/N Σ_n Σ_d [∂²_d k(x_n, z_m) + ∂_d k(x_n, z_m) ∂_d log q0(x_n)],
        is quadratic in α; adding the ridge ½λ‖α‖² its minimiser is α = −(G + λI)⁻¹ b.

        The kernel derivatives are exact and come from each feature net's value u = φ_r(x_n), its
        Jacobian J and its Laplacian h = Σ_d ∂²_d u (`_feature_derivatives`): with δ = u − φ_r(z_m),
            ∂_d k = −k δᵀJ_d / σ²,   Σ_d ∂²_d k = k [Σ_d (δᵀJ_d)² / σ⁴ − (‖J‖² + δᵀh) / σ²],
        so φ_r is differentiated on the N rows once, not on N·M copies. x is a constant here;
        ∇ log q0(x) = −x / q0_std². With create_graph=False the results are detached.
        """
        self._check_input(x, "x")
        x = x.detach()
        with torch.enable_grad():  # a DEQ stack's gradient mode needs grad mode on
            grad_k, laplacian = self._kernel_derivatives(x)
        if not create_graph:
            grad_k, laplacian = grad_k.detach(), laplacian.detach()
        score_q0 = -x / self.q0_std**2
        n = x.shape[0]
        gram = torch.einsum("nmd,npd->mp", grad_k, grad_k) / n
        rhs = (laplacian + torch.einsum("nmd,nd->nm", grad_k, score_q0)).mean(0)
        return gram, rhs

    def _kernel_derivatives(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """∂_d k(x_n, z_m) of shape (N, M, d) and Σ_d ∂²_d k(x_n, z_m) of shape (N, M)."""
        weights, variances = self._kernel_weights_and_variances()
        grad_k = laplacian = x.new_zeros(())
        for r, net in enumerate(self.features):
            u, jac, lap_u = _feature_derivatives(net, x)
            delta = u.unsqueeze(1) - net(self.inducing_points).unsqueeze(0)  # (N, M, L)
            k = weights[r] * torch.exp(-delta.pow(2).sum(-1) / (2 * variances[r]))  # (N, M)
            projected = torch.einsum("nml,nld->nmd", delta, jac)  # δᵀJ_d
            delta_lap = torch.einsum("nml,nl->nm", delta, lap_u)  # δᵀh
            jac_sq = jac.pow(2).sum((1, 2)).unsqueeze(1)  # ‖J‖², (N, 1)
            grad_k = grad_k + (-k / variances[r]).unsqueeze(-1) * projected
            laplacian = laplacian + k * (
                projected.pow(2).sum(-1) / variances[r] ** 2 - (jac_sq + delta_lap) / variances[r]
            )
        return grad_k, laplacian

    def solve_alpha(self, gram: Tensor, rhs: Tensor) -> Tensor:
        """α = −(G + λI)⁻¹ b, the ridge-regularised score-matching-optimal weights (shape (M,))."""
        m = self.n_inducing
        if gram.shape != (m, m) or rhs.shape != (m,):
            raise ValueError(
                f"expected G of shape ({m}, {m}) and b of shape ({m},), "
                f"got {tuple(gram.shape)} and {tuple(rhs.shape)}"
            )
        eye = torch.eye(m, dtype=gram.dtype, device=gram.device)
        return -torch.linalg.solve(gram + self.ridge * eye, rhs)

    def fit_alpha(self, x_fit: Tensor) -> Tensor:
        """The SM-optimal α on x_fit (N, d), differentiable w.r.t. φ, z, σ, ρ and log10_lambda."""
        return self.solve_alpha(*self.alpha_moments(x_fit, create_graph=True))

    @torch.no_grad()
    def refit_alpha(self, x_fit: Tensor, chunk_size: int = 100) -> Tensor:
        """`fit_alpha(x_fit)` without its graph, in bounded memory: G and b are accumulated over
        chunks of `chunk_size` rows (each φ_r then sees chunk·M rows at once)."""
        self._check_input(x_fit, "x_fit")
        check_int("chunk_size", chunk_size, 1)
        gram = x_fit.new_zeros(self.n_inducing, self.n_inducing)
        rhs = x_fit.new_zeros(self.n_inducing)
        for chunk in x_fit.split(chunk_size):
            chunk_gram, chunk_rhs = self.alpha_moments(chunk, create_graph=False)
            gram += chunk_gram * chunk.shape[0]
            rhs += chunk_rhs * chunk.shape[0]
        return self.solve_alpha(gram / x_fit.shape[0], rhs / x_fit.shape[0])

    @torch.no_grad()
    def finalize(self, x_train: Tensor, chunk_size: int = 100) -> Tensor:
        """Refit α on all of x_train with the current λ (`refit_alpha`), store it in the `alpha`
        buffer, return it."""
        alpha = self.refit_alpha(x_train, chunk_size)
        self.alpha.copy_(alpha)
        return alpha.clone()

    def _kernel_values(self, x: Tensor, paired: bool) -> Tensor:
        """k(x_b, z_m) for x of shape (B, d) -> (B, M); with paired, x (N, M, d) against z_m -> (N, M)."""
        weights, variances = self._kernel_weights_and_variances()
        two_variances = 2 * variances
        total = x.new_zeros(())
        for r, net in enumerate(self.features):
            w = net(self.inducing_points)
            if paired:
                u = net(x.reshape(-1, self.in_features)).reshape(*x.shape[:-1], -1)
                squared = (u - w).pow(2).sum(-1)
            else:
                u = net(x)
                # Expanded to avoid a (B, M, latent) tensor; roundoff can leave tiny negative
                # distances, harmless under exp, and autograd still sees the exact 2(u - w).
                squared = u.pow(2).sum(-1, keepdim=True) - 2 * u @ w.T + w.pow(2).sum(-1)
            total = total + weights[r] * torch.exp(-squared / two_variances[r])
        return total

    def _kernel_weights_and_variances(self) -> tuple[Tensor, Tensor]:
        """ρ = softmax(kernel_logits) and σ_r² = exp(2 log_bandwidths); the inducing points must be set."""
        if not bool(self.inducing_ready):
            raise RuntimeError("the inducing points are not initialised; call init_inducing_points(x) first")
        return torch.softmax(self.kernel_logits, dim=0), torch.exp(2 * self.log_bandwidths)

    def _alpha_or_stored(self, alpha: Tensor | None) -> Tensor:
        if alpha is None:
            return self.alpha
        if alpha.shape != (self.n_inducing,):
            raise ValueError(f"alpha must have shape ({self.n_inducing},), got {tuple(alpha.shape)}")
        return alpha

    def _check_input(self, x: Tensor, name: str) -> None:
        if x.dim() != 2 or x.shape[1] != self.in_features or x.shape[0] == 0:
            raise ValueError(f"{name} must have shape (batch >= 1, {self.in_features}), got {tuple(x.shape)}")


def _feature_derivatives(net: nn.Module, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """u = net(x) (N, L), its Jacobian ∂u/∂x (N, L, d) and Laplacian Σ_d ∂²u/∂x_d² (N, L).

    Nested forward mode (`torch.func.jvp`) with the d input directions stacked as rows: row (n, j)
    is x_n with tangent e_j. The feature nets act row by row, so this is d forward-over-forward
    products in one batched pass; vmap would do the same but cannot follow a DEQ stack, which
    solves to a data-dependent tolerance.
    """
    n, d = x.shape
    rows = x.unsqueeze(1).expand(n, d, d).reshape(n * d, d)
    directions = torch.eye(d, dtype=x.dtype, device=x.device).expand(n, d, d).reshape(n * d, d)
    first_derivative = lambda v: jvp(net, (v,), (directions,))[1]  # noqa: E731
    try:
        columns, curvatures = jvp(first_derivative, (rows,), (directions,))
    except NotImplementedError as error:
        raise TypeError(
            "DKEF fits α with forward-mode derivatives of its feature nets (torch.func.jvp), and a module in "
            f"{type(net).__name__} has no forward-mode rule: {error}"
        ) from error
    latent = columns.shape[-1]
    jacobian = columns.reshape(n, d, latent).transpose(1, 2)
    return net(x), jacobian, curvatures.reshape(n, d, latent).sum(1)


class FixedAlphaDKEF:
    """A DKEF's log p̃ under a given α, for the losses that take a log-density (CP, approx-BP)."""

    def __init__(self, model: DKEF, alpha: Tensor) -> None:
        self.model, self.alpha = model, alpha

    def __call__(self, x: Tensor) -> Tensor:
        """log p̃(x) under α, shape (B,)."""
        return self.model(x, alpha=self.alpha)

    def propagation_steps(self) -> list[Head]:
        """`DKEF.propagation_steps` under α."""
        return self.model.propagation_steps(self.alpha)


def split_batch_loss(
    model: DKEF, x: Tensor, loss_fn: Callable[[ScoreFn, Tensor], Tensor], takes_log_density: bool = False
) -> Tensor:
    """DKEF's training loss on a batch: α fitted on the first half of x, loss_fn on the second.

    The first floor(B/2) rows fit α (`DKEF.fit_alpha`); loss_fn(fn, x_rest) gets the score
    ∇_x log p̃ under that α, taken by reverse-mode autograd (so a loss's trace="forward" does not
    apply), or with takes_log_density the log-density itself (`FixedAlphaDKEF`, for CP and
    approx-BP). The loss's gradient reaches φ, z, σ, ρ and log10_lambda through α.
    """
    if x.dim() != 2 or x.shape[0] < 2:
        raise ValueError(f"x must have shape (batch >= 2, d) to be split in halves, got {tuple(x.shape)}")
    half = x.shape[0] // 2
    alpha = model.fit_alpha(x[:half])
    fn = FixedAlphaDKEF(model, alpha) if takes_log_density else functools.partial(model.score, alpha=alpha)
    return loss_fn(fn, x[half:])
