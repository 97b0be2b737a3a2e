"""Annealed Langevin dynamics (Song & Ermon, 2019, Algorithm 1) and saving of generated samples.

The sampler never calls `torch.no_grad`: a score model may need autograd at inference (an
energy model differentiates log p; an implicit layer may keep its gradient path), so whether
autograd is on is left to the caller. x is detached after every step, so no graph builds up.
"""
from __future__ import annotations

import math
import pathlib
from typing import Callable, Sequence

import numpy as np
import torch
import torchvision
from torch import Tensor, nn

from score_matching.metrics_log import PhaseProgress

ScoreFn = Callable[[Tensor, Tensor], Tensor]
StepCallback = Callable[[int, Tensor], None]


def geometric_sigmas(sigma_max: float, sigma_min: float, num_levels: int) -> Tensor:
    """NCSN's noise levels: `num_levels` values from sigma_max down to sigma_min, evenly spaced in log."""
    if not 0 < sigma_min < sigma_max:
        raise ValueError(f"need 0 < sigma_min < sigma_max, got sigma_min={sigma_min!r}, sigma_max={sigma_max!r}")
    if not isinstance(num_levels, int) or num_levels < 2:
        raise ValueError(f"num_levels must be an int >= 2, got {num_levels!r}")
    return torch.logspace(math.log10(sigma_max), math.log10(sigma_min), num_levels, dtype=torch.float64).to(
        torch.get_default_dtype()
    )


def _check_sigmas(sigmas: Tensor | Sequence[float]) -> list[float]:
    values = torch.as_tensor(sigmas, dtype=torch.float64)
    if values.ndim != 1 or values.numel() == 0:
        raise ValueError(f"sigmas must be a non-empty 1-D sequence of noise levels, got shape {tuple(values.shape)}")
    values = values.tolist()
    if not all(math.isfinite(s) and s > 0 for s in values):
        raise ValueError(f"sigmas must be finite and positive, got {values}")
    if any(b >= a for a, b in zip(values, values[1:])):
        raise ValueError(f"sigmas must be strictly decreasing (annealing runs from the largest), got {values}")
    return values


def annealed_langevin_dynamics(
    score_fn: ScoreFn,
    x_init: Tensor,
    sigmas: Tensor | Sequence[float],
    n_steps_each: int,
    step_lr: float,
    denoise: bool = True,
    generator: torch.Generator | None = None,
    callback: StepCallback | None = None,
    return_trajectory: bool = False,
) -> Tensor | tuple[Tensor, list[Tensor]]:
    """Sample by annealed Langevin dynamics from a noise-conditional score model.

    For each level i = 0 … L−1 (σ_0 > … > σ_{L−1}), with α_i = step_lr · (σ_i / σ_{L−1})², take
    `n_steps_each` steps x ← x + α_i/2 · s(x, i) + √α_i · z, z ~ N(0, I). With `denoise`, finish
    with x ← x + σ_{L−1}² · s(x, L−1) (Tweedie's denoising step). This is Algorithm 1 of the NCSN
    paper; the NCSN code's `step_lr` is half of this one (it steps by step_lr · ratio · s).

    Args:
        score_fn: s(x, labels) with labels a LongTensor (B,) of level indices into `sigmas`,
            which must be the levels the model was trained with. An `nn.Module` is put in eval
            mode for the run and its previous mode restored afterwards.
        x_init: the starting points (B, ...), e.g. uniform noise for images.
        sigmas: the noise levels, strictly decreasing.
        n_steps_each: Langevin steps T per level.
        step_lr: ε in α_i above.
        denoise: whether to apply the final denoising step.
        generator: the source of the Langevin noise; it must live on x_init's device. Each step
            draws one standard normal tensor of x's shape from it.
        callback: called as callback(step_index, x) after every update that evaluated the score,
            the denoising step included, with step_index counting from 0; e.g. to count solver
            iterations of implicit layers.
        return_trajectory: also return the list of x after every update (on the CPU).

    Returns:
        The final samples, or (samples, trajectory) when `return_trajectory`.
    """
    levels = _check_sigmas(sigmas)
    if not isinstance(n_steps_each, int) or n_steps_each < 1:
        raise ValueError(f"n_steps_each must be a positive int, got {n_steps_each!r}")
    if not (math.isfinite(step_lr) and step_lr > 0):
        raise ValueError(f"step_lr must be a finite positive number, got {step_lr!r}")
    if not x_init.is_floating_point() or x_init.ndim < 1:
        raise ValueError(f"x_init must be a floating tensor of shape (B, ...), got {x_init.dtype} {tuple(x_init.shape)}")
    if generator is not None and generator.device.type != x_init.device.type:
        raise ValueError(f"generator is on {generator.device} but x_init is on {x_init.device}; they must match")

    was_training = score_fn.training if isinstance(score_fn, nn.Module) else None
    if was_training:
        score_fn.eval()
    try:
        x = x_init.detach()
        trajectory: list[Tensor] = []
        step = 0

        def record(x: Tensor) -> None:
            nonlocal step
            if callback is not None:
                callback(step, x)
            if return_trajectory:
                trajectory.append(x.cpu().clone())
            step += 1

        batch = x.shape[0]
        for i, sigma in enumerate(levels):
            labels = torch.full((batch,), i, dtype=torch.long, device=x.device)
            alpha = step_lr * (sigma / levels[-1]) ** 2
            for _ in range(n_steps_each):
                noise = torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)
                x = (x + 0.5 * alpha * score_fn(x, labels) + math.sqrt(alpha) * noise).detach()
                record(x)
        if denoise:
            labels = torch.full((batch,), len(levels) - 1, dtype=torch.long, device=x.device)
            x = (x + levels[-1] ** 2 * score_fn(x, labels)).detach()
            record(x)
    finally:
        if was_training:
            score_fn.train()
    return (x, trajectory) if return_trajectory else x


def langevin_step_count(n_levels: int, n_steps_each: int, denoise: bool) -> int:
    """How many score evaluations (callback calls) one `annealed_langevin_dynamics` run makes."""
    return n_levels * n_steps_each + int(denoise)


def langevin_progress(progress: PhaseProgress, n_levels: int, n_steps_each: int, offset: int = 0) -> StepCallback:
    """A `callback` for `annealed_langevin_dynamics` that reports to `progress` with the current noise
    level; `offset` steps are counted as done before this run (for a draw made in several runs)."""

    def callback(step: int, x: Tensor) -> None:
        level = min(step // n_steps_each, n_levels - 1)
        progress.update(offset + step + 1, f"noise level {level + 1}/{n_levels}")

    return callback


def _check_images(x: Tensor) -> None:
    if x.ndim != 4 or x.shape[1] not in (1, 3):
        raise ValueError(f"images must have shape (B, 1 or 3, H, W), got {tuple(x.shape)}")


def save_image_grid(x: Tensor, path: str | pathlib.Path, nrow: int = 8) -> None:
    """Write images x (B, C, H, W) with values in [0, 1] (clamped) as one PNG grid, `nrow` per row."""
    _check_images(x)
    path = pathlib.Path(path)
    if path.suffix.lower() != ".png":
        raise ValueError(f"path must end in .png, got {str(path)!r}")
    if not isinstance(nrow, int) or nrow < 1:
        raise ValueError(f"nrow must be a positive int, got {nrow!r}")
    path.parent.mkdir(parents=True, exist_ok=True)
    torchvision.utils.save_image(x.detach().cpu().float().clamp(0, 1), path, nrow=nrow)


def save_samples_npz(x: Tensor, path: str | pathlib.Path) -> None:
    """Write samples x to a compressed .npz file under the key "samples" (as float32 numpy)."""
    path = pathlib.Path(path)
    if path.suffix != ".npz":
        # numpy would silently append ".npz", writing somewhere other than `path`.
        raise ValueError(f"path must end in .npz, got {str(path)!r}")
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, samples=x.detach().cpu().float().numpy())
