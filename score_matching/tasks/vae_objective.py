"""The SSM-VAE objective: one loss whose single backward trains the score estimator and the VAE.

Negative ELBO of an implicit encoder, per image:
    −ELBO(x) = E_q[−log p_θ(x|z)] + E_q[−log p(z)] + E_q[log q_φ(z|x)],   z = f_φ(x, ε).
The last term has no tractable value, but its gradient does (Song et al., 2019, §6.2.1):
    ∇_φ E_ε[log q_φ(f_φ(x, ε)|x)] = E_ε[∇_z log q_φ(z|x)ᵀ ∂z/∂φ]   (the ∂_φ log q at fixed z term
has zero mean), so with the score estimate S ≈ ∇_z log q the term is replaced by the surrogate
S(x, z).detach()ᵀ z, whose gradient in φ is Sᵀ ∂z/∂φ (`entropy_surrogate`).

`ssm_vae_loss` returns  SSM(S_ψ(x, ·); z.detach()) + mean[recon + prior + surrogate]:
- the SSM term sees z detached, so it trains only ψ (the score estimator), as a function of z given x;
- the ELBO part sees S detached, so it trains only φ and θ (encoder and decoder).
The two parameter sets are disjoint, so one backward and one Adam over all parameters (without
gradient clipping, which would couple them) equal two optimisers on their own losses, as in the
sliced-score-matching code, except that both use this step's z (the reference code draws a second
z after updating ψ) and the surrogate uses ψ before its update. The surrogate reuses the score the
SSM term computed at the same z (no second pass through the score estimator).
"""
from __future__ import annotations

import math
from typing import Callable

import torch
from torch import Tensor, nn

from score_matching.losses import ScoreFn
from score_matching.losses.common import check_choice, per_sample_sum, replicate
from score_matching.models.vae import LIKELIHOODS

ScoreLoss = Callable[..., Tensor]  # (score_fn, z, generator=None) -> scalar, e.g. sliced_score_matching_vr
ReconstructionNLL = Callable[[Tensor, Tensor], Tensor]  # (decoder output, x) -> (B,)
# Uniform dequantisation of 8-bit pixels on the [-1, 1] scale: one level is 2/256 wide.
GAUSSIAN_DEQUANTIZATION_WIDTH = 2.0 / 256.0


def model_inputs(images: Tensor, likelihood: str, generator: torch.Generator | None = None) -> Tensor:
    """Images in [0, 1] as the model sees them (the sliced-score-matching VAE's preprocessing).

    "bernoulli": dynamically binarised, x ~ Bernoulli(pixel); "gaussian": scaled to [-1, 1] with
    uniform dequantisation noise of one 8-bit level.
    """
    check_choice("likelihood", likelihood, LIKELIHOODS)
    u = torch.rand(images.shape, device=images.device, dtype=images.dtype, generator=generator)
    if likelihood == "bernoulli":
        return (u < images).to(images.dtype)
    return 2.0 * images - 1.0 + (u - 0.5) * GAUSSIAN_DEQUANTIZATION_WIDTH


def reconstruction_nll(decoded: Tensor, x: Tensor, likelihood: str, log_std: float) -> Tensor:
    """−log p_θ(x|z) per image (B,): Bernoulli with logits `decoded`, or Gaussian with mean `decoded`
    and fixed standard deviation exp(log_std) per pixel (on the [-1, 1] scale)."""
    check_choice("likelihood", likelihood, LIKELIHOODS)
    if likelihood == "bernoulli":
        return per_sample_sum(nn.functional.binary_cross_entropy_with_logits(decoded, x, reduction="none"))
    nll = 0.5 * ((x - decoded) / math.exp(log_std)) ** 2 + log_std + 0.5 * math.log(2 * math.pi)
    return per_sample_sum(nll)


def decoded_images(decoded: Tensor, likelihood: str) -> Tensor:
    """The decoder's mean as images in [0, 1]: sigmoid of the logits, or the tanh mean mapped from [-1, 1]."""
    check_choice("likelihood", likelihood, LIKELIHOODS)
    if likelihood == "bernoulli":
        return torch.sigmoid(decoded)
    return ((decoded + 1.0) / 2.0).clamp(0.0, 1.0)


def neg_log_prior(z: Tensor) -> Tensor:
    """−log N(z; 0, I) per row (B,)."""
    return per_sample_sum(0.5 * z**2 + 0.5 * math.log(2 * math.pi))


def entropy_surrogate(score: Tensor, z: Tensor) -> Tensor:
    """S.detach()ᵀ z per row (B,): its gradient in φ is Sᵀ ∂z/∂φ ≈ ∇_φ E_q[log q_φ(z|x)] (its value is not)."""
    return per_sample_sum(score.detach() * z)


def _recording_score(model: nn.Module, x: Tensor, outputs: list[Tensor]) -> ScoreFn:
    """z -> S(x, z) for a z batch of n stacked copies of x's rows; keeps each output in `outputs`."""

    def score_fn(z: Tensor) -> Tensor:
        s = model.score(replicate(x, z.shape[0] // x.shape[0]), z)
        outputs.append(s)
        return s

    return score_fn


def score_estimator_loss(
    model: nn.Module, x: Tensor, z: Tensor, score_loss: ScoreLoss, generator: torch.Generator | None = None
) -> tuple[Tensor, Tensor]:
    """(score_loss of S_ψ(x, ·) at z.detach(), S_ψ(x, z) detached): the SSM term and the score it saw."""
    outputs: list[Tensor] = []
    loss = score_loss(_recording_score(model, x, outputs), z.detach(), generator=generator)
    return loss, outputs[0][: x.shape[0]].detach()  # copy-major: the first copy's rows are z's


def neg_elbo_surrogate(model: nn.Module, x: Tensor, z: Tensor, score: Tensor, nll: ReconstructionNLL) -> Tensor:
    """recon + prior + entropy surrogate per image (B,); its φ, θ gradients are those of −ELBO."""
    return nll(model.decode(z), x) + neg_log_prior(z) + entropy_surrogate(score, z)


def ssm_vae_loss(model: nn.Module, x: Tensor, score_loss: ScoreLoss, nll: ReconstructionNLL) -> Tensor:
    """The training loss (see the module docstring): SSM on detached z + the mean −ELBO surrogate."""
    z = model.encode(x)
    ssm, score = score_estimator_loss(model, x, z, score_loss)
    return ssm + neg_elbo_surrogate(model, x, z, score, nll).mean()


def knn_entropy(samples: Tensor, k: int) -> Tensor:
    """Kozachenko–Leonenko k-nearest-neighbour entropy estimate (nats) of each row's sample set.

    samples: (B, N, d), N draws from each of B distributions. Ĥ = ψ(N) − ψ(k) + log V_d +
    (d/N) Σ_i log ρ_k(i), ρ_k(i) the Euclidean distance from draw i to its k-th nearest other draw
    and V_d the volume of the unit d-ball. Consistent as N grows; biased for small N and large d.
    """
    n, d = samples.shape[1], samples.shape[2]
    if not 1 <= k < n:
        raise ValueError(f"k must be in [1, {n - 1}] for {n} samples, got {k}")
    distances = torch.cdist(samples, samples)
    distances.diagonal(dim1=1, dim2=2).fill_(float("inf"))
    rho = distances.kthvalue(k, dim=2).values.clamp_min(torch.finfo(samples.dtype).tiny)
    log_unit_ball = 0.5 * d * math.log(math.pi) - math.lgamma(0.5 * d + 1)
    digamma_n, digamma_k = torch.special.digamma(torch.tensor([n, k], dtype=torch.float64)).tolist()
    return digamma_n - digamma_k + log_unit_ball + d * rho.log().mean(dim=1)


@torch.no_grad()
def elbo_knn(
    model: nn.Module, x: Tensor, nll: ReconstructionNLL, n_samples: int, k: int, generator: torch.Generator | None = None
) -> dict[str, Tensor]:
    """Per-image (B,) ELBO estimate with log q from `knn_entropy` over n_samples draws of z|x.

    Returns recon (E_q[−log p(x|z)]), prior (E_q[−log p(z)]), entropy (Ĥ[q(·|x)]) and
    elbo = −recon − prior + entropy; the expectations average the same n_samples draws.
    """
    copies = replicate(x, n_samples)  # copy-major: row j·B + b is image b
    z = model.encode(copies, generator)
    recon = nll(model.decode(z), copies).view(n_samples, x.shape[0]).mean(dim=0)
    prior = neg_log_prior(z).view(n_samples, x.shape[0]).mean(dim=0)
    entropy = knn_entropy(z.view(n_samples, x.shape[0], -1).transpose(0, 1), k)
    return {"recon": recon, "prior": prior, "entropy": entropy, "elbo": -recon - prior + entropy}
