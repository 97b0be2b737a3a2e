"""DKEF's normaliser Z = ∫ p̃(x) dx by importance sampling, and the test log-likelihood it gives.

`log_normaliser_importance_sampling` estimates log Z with its delta-method standard error, drawing
rounds of samples until a target standard error is met. Its proposal is the DKEF's base density
q0 = N(0, q0_std² I) by default (weights exp f(x)), or a defensive mixture w0·q0 + (1 − w0)·q_data
(Hesterberg, 1995) whose data part puts samples where a trained p̃ concentrates while the q0 part
bounds every weight p̃/q by exp f(x) / w0. q_data is a KDE of data rows (`DefensiveKDEProposal`:
flexible, but log q costs a pass over every centre, slow at d = 100-200) or one Gaussian with the
rows' mean and covariance (`DefensiveGaussianProposal`: O(d²) per sample).
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

from score_matching.metrics_log import PhaseProgress
from score_matching.models.dkef import DKEF
from score_matching.models.mlp import check_int

# Names of the proposals `eval.is_proposal` chooses from: q0 itself, a DefensiveKDEProposal or a
# DefensiveGaussianProposal.
IS_PROPOSALS = ("q0", "defensive_kde", "defensive_gaussian")


def _check_q0(q0_std: float, q0_weight: float) -> None:
    if not (isinstance(q0_std, (int, float)) and math.isfinite(q0_std) and q0_std > 0):
        raise ValueError(f"q0_std must be a finite number > 0, got {q0_std!r}")
    if not (isinstance(q0_weight, (int, float)) and 0 < q0_weight <= 1):
        raise ValueError(f"q0_weight must be in (0, 1] (1 = q0 alone), got {q0_weight!r}")


def _check_rows(name: str, rows: Tensor, least: int) -> None:
    if not isinstance(rows, Tensor) or rows.dim() != 2 or rows.shape[0] < least or rows.shape[1] < 1:
        shape = tuple(rows.shape) if isinstance(rows, Tensor) else type(rows).__name__
        raise ValueError(f"{name} must be a tensor of shape (N >= {least}, d >= 1), got {shape}")
    if not torch.isfinite(rows).all():
        raise ValueError(f"{name} must be finite; got NaN or inf entries")


def _log_q0(x: Tensor, q0_std: float) -> Tensor:
    """log N(x; 0, q0_std² I) for float64 rows x."""
    return -0.5 * x.pow(2).sum(-1) / q0_std**2 - 0.5 * x.shape[1] * math.log(2 * math.pi * q0_std**2)


def _with_q0(log_q0: Tensor, log_data: Tensor, q0_weight: float) -> Tensor:
    """log(w0·q0 + (1 − w0)·q_data) from the two log-densities."""
    return torch.logaddexp(math.log(q0_weight) + log_q0, math.log1p(-q0_weight) + log_data)


class DefensiveKDEProposal:
    """q(x) = w0·N(x; 0, q0_std² I) + (1 − w0)·(1/N) Σ_n N(x; c_n, h² I), an importance-sampling proposal.

    Args:
        centres: the KDE's centres c_n, shape (N >= 1, d), e.g. training rows.
        q0_std: standard deviation of the q0 component (the DKEF's q0_std).
        q0_weight: w0, the q0 component's weight, 0 < w0 <= 1 (1 = q0 alone).
        bandwidth: the KDE's h; None = Scott's rule h = N^(−1/(d+4)) · (mean over dimensions of the
            centres' standard deviation).
    """

    def __init__(self, centres: Tensor, q0_std: float, q0_weight: float = 0.5, bandwidth: float | None = None) -> None:
        _check_rows("centres", centres, 1)
        _check_q0(q0_std, q0_weight)
        n, d = centres.shape
        if bandwidth is None:
            spread = centres.double().std(dim=0, unbiased=n > 1).mean().item()
            bandwidth = n ** (-1.0 / (d + 4)) * spread
            if not bandwidth > 0:
                raise ValueError(
                    f"Scott's rule gives bandwidth {bandwidth!r} for {n} centre(s) with no spread; pass bandwidth > 0"
                )
        elif not (isinstance(bandwidth, (int, float)) and math.isfinite(bandwidth) and bandwidth > 0):
            raise ValueError(f"bandwidth must be a finite number > 0 (or None for Scott's rule), got {bandwidth!r}")
        self.centres = centres.detach()
        self.q0_std, self.q0_weight, self.bandwidth = float(q0_std), float(q0_weight), float(bandwidth)
        self._centres64 = self.centres.double()
        self._centres64_sq = self._centres64.pow(2).sum(-1)

    @property
    def dim(self) -> int:
        """The data dimension d."""
        return self.centres.shape[1]

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """n draws, shape (n, d), in the centres' dtype and on their device (where `generator` must live).

        Each draw picks its component first (q0 with probability w0, else a uniformly chosen centre),
        then its point.
        """
        check_int("n", n, 1)
        device, dtype = self.centres.device, self.centres.dtype
        from_q0 = torch.rand(n, generator=generator, device=device) < self.q0_weight
        rows = torch.randint(self.centres.shape[0], (n,), generator=generator, device=device)
        noise = torch.randn((n, self.dim), generator=generator, device=device, dtype=dtype)
        kde = self.centres[rows] + self.bandwidth * noise
        return torch.where(from_q0[:, None], self.q0_std * noise, kde)

    def log_prob(self, x: Tensor, max_pairs: int = 2**22) -> Tensor:
        """log q(x), shape (n,), in float64, exact (a log-sum-exp over all components).

        Rows of x are taken in chunks so that each chunk's (rows × N) distance matrix has at most
        max_pairs entries (at least one row at a time).
        """
        check_int("max_pairs", max_pairs, 1)
        if x.dim() != 2 or x.shape[1] != self.dim:
            raise ValueError(f"x must have shape (n, {self.dim}), got {tuple(x.shape)}")
        x = x.to(device=self.centres.device, dtype=torch.float64)
        d, n_centres = self.dim, self.centres.shape[0]
        log_q0 = _log_q0(x, self.q0_std)
        if self.q0_weight == 1.0:
            return log_q0
        rows = max(1, max_pairs // n_centres)
        log_kde = torch.cat([self._log_kde(part) for part in x.split(rows)])
        log_kde = log_kde - math.log(n_centres) - 0.5 * d * math.log(2 * math.pi * self.bandwidth**2)
        return _with_q0(log_q0, log_kde, self.q0_weight)

    def _log_kde(self, x: Tensor) -> Tensor:
        """log Σ_n exp(−‖x − c_n‖² / (2h²)), shape (rows,), for float64 x."""
        squared = x.pow(2).sum(-1, keepdim=True) + self._centres64_sq - 2.0 * x @ self._centres64.T
        return torch.logsumexp(-0.5 * squared.clamp_min(0.0) / self.bandwidth**2, dim=1)


class DefensiveGaussianProposal:
    """q(x) = w0·N(x; 0, q0_std² I) + (1 − w0)·N(x; μ, Σ), μ and Σ the mean and covariance of data rows.

    Args:
        rows: the rows to fit, shape (N, d) with N > d so that Σ is positive definite, e.g. the
            training set.
        q0_std: standard deviation of the q0 component (the DKEF's q0_std).
        q0_weight: w0, the q0 component's weight, 0 < w0 <= 1 (1 = q0 alone).
    """

    def __init__(self, rows: Tensor, q0_std: float, q0_weight: float = 0.5) -> None:
        _check_rows("rows", rows, 2)
        _check_q0(q0_std, q0_weight)
        n, d = rows.shape
        if n <= d:
            raise ValueError(f"rows must have more rows than columns to fit a covariance, got shape {(n, d)}")
        data = rows.detach().double()
        self.mean = data.mean(0)
        covariance = torch.cov(data.T).reshape(d, d)
        self.cholesky, info = torch.linalg.cholesky_ex(covariance)
        if info.item() != 0:
            raise ValueError(f"the covariance of the {n} rows is not positive definite (rank-deficient data?)")
        self.q0_std, self.q0_weight = float(q0_std), float(q0_weight)
        self.device, self.dtype = rows.device, rows.dtype
        self._log_det = 2 * self.cholesky.diagonal().log().sum()

    @property
    def dim(self) -> int:
        """The data dimension d."""
        return self.mean.shape[0]

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """n draws, shape (n, d), in the rows' dtype and on their device (where `generator` must live)."""
        check_int("n", n, 1)
        from_q0 = torch.rand(n, generator=generator, device=self.device) < self.q0_weight
        noise = torch.randn((n, self.dim), generator=generator, device=self.device, dtype=torch.float64)
        fitted = self.mean + noise @ self.cholesky.T
        return torch.where(from_q0[:, None], self.q0_std * noise, fitted).to(self.dtype)

    def log_prob(self, x: Tensor) -> Tensor:
        """log q(x), shape (n,), in float64."""
        if x.dim() != 2 or x.shape[1] != self.dim:
            raise ValueError(f"x must have shape (n, {self.dim}), got {tuple(x.shape)}")
        x = x.to(device=self.device, dtype=torch.float64)
        log_q0 = _log_q0(x, self.q0_std)
        if self.q0_weight == 1.0:
            return log_q0
        white = torch.linalg.solve_triangular(self.cholesky, (x - self.mean).T, upper=False)
        log_fitted = -0.5 * white.pow(2).sum(0) - 0.5 * self._log_det - 0.5 * self.dim * math.log(2 * math.pi)
        return _with_q0(log_q0, log_fitted, self.q0_weight)


Proposal = DefensiveKDEProposal | DefensiveGaussianProposal


@torch.no_grad()
def log_normaliser_importance_sampling(
    model: DKEF,
    n_samples: int,
    chunk: int = 10_000,
    generator: torch.Generator | None = None,
    target_std_error: float | None = None,
    max_samples: int | None = None,
    proposal: Proposal | None = None,
) -> tuple[float, float, int]:
    """Importance-sampling estimate of log Z = log ∫ p̃(x) dx, its standard error, and the sample count.

    With proposal=None the proposal is q0 itself, so x ~ q0 and log w = log p̃(x) − log q0(x) = f(x);
    with a proposal q, x ~ q and log w = log p̃(x) − log q(x). Then Ẑ = mean(w), log Ẑ is a
    log-sum-exp, and by the delta method se(log Ẑ) = std(w) / (√n mean(w)).
    Draws n_samples; with target_std_error, keeps drawing n_samples more until the standard error
    is at most the target or max_samples (default: 100·n_samples) are drawn. Samples come `chunk`
    at a time from `generator`, which must live on the model's device (with a proposal: on the
    proposal's device); the log-weights are kept in float64 (8 bytes per sample). Raises
    RuntimeError if any log-weight is NaN or +inf.
    """
    check_int("n_samples", n_samples, 2)
    check_int("chunk", chunk, 1)
    cap = max_samples if max_samples is not None else 100 * n_samples
    check_int("max_samples", cap, n_samples)
    if target_std_error is not None and not target_std_error > 0:
        raise ValueError(f"target_std_error must be > 0 (or None), got {target_std_error!r}")
    if proposal is not None and proposal.dim != model.in_features:
        raise ValueError(f"the proposal has dimension {proposal.dim}, the model {model.in_features}")
    reference = model.inducing_points
    log_weights: list[Tensor] = []
    drawn = 0
    # The ETA is that of drawing all max_samples; a round that meets the target error ends sooner.
    progress = PhaseProgress("importance sampling for log Z", cap, "samples (at most)")
    detail = f"target std error {target_std_error}" if target_std_error is not None else ""
    while True:
        for start in range(0, n_samples, chunk):
            rows = min(chunk, n_samples - start)
            if proposal is None:
                x = torch.randn((rows, model.in_features), generator=generator, device=reference.device, dtype=reference.dtype)
                log_weights.append(model.kernel_expansion(x * model.q0_std).double())
            else:
                x = proposal.sample(rows, generator).to(reference)
                log_weights.append(model(x).double() - proposal.log_prob(x).to(reference.device))
            progress.update(drawn + start + rows, detail)
        drawn += n_samples
        all_log_weights = torch.cat(log_weights)
        _check_log_weights(all_log_weights, proposal)
        log_z, std_error = _log_mean_exp_with_error(all_log_weights)
        detail = f"log Z {log_z:.4f} ± {std_error:.3g} after {drawn} samples" + (
            f" (target {target_std_error})" if target_std_error is not None else "")
        if target_std_error is None or std_error <= target_std_error or drawn + n_samples > cap:
            return log_z, std_error, drawn


def _check_log_weights(log_w: Tensor, proposal: Proposal | None) -> None:
    """Raises RuntimeError if any log-weight is NaN or +inf (which would make log Z NaN or inf)."""
    bad = torch.isnan(log_w) | (log_w == math.inf)
    if bad.any():
        example = log_w[bad][0].item()
        source = "f(x), x ~ q0" if proposal is None else f"log p̃(x) − log q(x), x ~ {type(proposal).__name__}"
        raise RuntimeError(
            f"{int(bad.sum())} of {len(log_w)} importance samples have a non-finite log-weight ({source}), "
            f"e.g. {example!r}; the model's log-density is NaN or overflows there"
        )


def _log_mean_exp_with_error(log_w: Tensor) -> tuple[float, float]:
    """log mean(exp(log_w)) and the delta-method standard error of that estimate."""
    log_z = torch.logsumexp(log_w, dim=0) - math.log(len(log_w))
    weights = torch.exp(log_w - log_w.max())  # the ratio std/mean is invariant to this shift
    return log_z.item(), (weights.std() / (weights.mean() * math.sqrt(len(log_w)))).item()


@torch.no_grad()
def mean_log_likelihood(model: DKEF, x: Tensor, log_normaliser: float, chunk: int = 1000) -> float:
    """Test log-likelihood: mean over rows of log p̃(x) − log Z, in float64, `chunk` rows at a time."""
    check_int("chunk", chunk, 1)
    if x.dim() != 2 or x.shape[0] == 0:
        raise ValueError(f"x must have shape (batch >= 1, {model.in_features}), got {tuple(x.shape)}")
    total = sum(model(part).double().sum().item() for part in x.split(chunk))
    return total / x.shape[0] - log_normaliser
