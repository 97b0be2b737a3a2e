"""Suite `solver`: forward-solve cost of Picard vs Anderson, warm starts, and the paper's scheme.

Families (every variant of a family sees the same model, data and input sequence; "picard" —
relative residual `tol`, cold start, phantom K=2: the plugin's defaults — is the reference):
- "dense-slow": the DEQ energy with a slowly contracting cell, z = tanh(W z + g(x)), W symmetric
  and spectrally normalised to 1/λ, g a Linear scaled by `dense_injection_gain` so that z* stays
  near 0 where tanh' ≈ 1: ||∂f/∂z|| ≈ 1/λ (reported as `contraction_factor`, after training).
  The model is first trained for `pretrain_steps` exact-SM steps (batched trace, Adam `lr`) on a
  correlated Gaussian (x = Lε, L lower triangular with unit diagonal and N(0, `data_mixing`²)
  entries below it), always with the reference solver, so every variant measures the same trained
  model. One step is then one no-grad forward at x_t (the solve a sampler runs), after which the
  input drifts, x_{t+1} = x_t + drift·ξ, ξ ~ N(0, I), as in Langevin sampling. Variants: picard,
  anderson (cold), picard-warm, anderson-warm (warm start from the previous z*), and paper.
- "dense-slow-train": the same energy, untrained; one step is one training step (zero_grad,
  exact-SM loss with the batched trace, backward, Adam) on the next mini-batch of the correlated
  Gaussian (`train_batches` batches, cycled), so a warm start begins from the previous batch's z*.
  Variants as in dense-slow; `cell_evals` counts the forward solve of each training step.
- "conv-score": the `depth` suite's conv DEQ (B, C, 32, 32 state) at initialisation (there is no
  image data set to train it on everywhere the suite runs), one no-grad forward per step on
  drifting inputs: picard, anderson, paper.
"paper" is the paper's scheme (appendix F): Picard until the whole-batch absolute
||z_{k+1} − z_k|| < `paper_tol` (`benchmarks.paper_solver`), phantom K=2 — side by side with the
defaults. `cell_evals` is the mean number of cell evaluations per forward solve; `converged` the
fraction of solves that met their tolerance.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import itertools

import torch
from torch import Tensor, nn

from benchmarks.harness import Bench, count_params, deq_contraction
from benchmarks.models import ConvScoreNet, DenseDEQEnergy, deq_conv_core
from benchmarks.paper_solver import PAPER_SOLVER
from benchmarks.plots import MEMORY, TIME, bar_grid
from benchmarks.report import Target, ratio_of
from benchmarks.suites import Suite, Variant, register_suite
from deq_plugin import DEQ, DenseCell
from score_matching.losses import exact_score_matching, score_from_log_density

SLOW, SLOW_TRAIN, CONV = "dense-slow", "dense-slow-train", "conv-score"
REFERENCE = "picard"
SOLVER_OPTIONS = {
    "picard": {"solver": "picard", "warm_start": False},
    "anderson": {"solver": "anderson", "warm_start": False},
    "picard-warm": {"solver": "picard", "warm_start": True},
    "anderson-warm": {"solver": "anderson", "warm_start": True},
    "paper": {"solver": PAPER_SOLVER, "warm_start": False},
}
VARIANTS = tuple(Variant(family, name) for family in (SLOW, SLOW_TRAIN) for name in SOLVER_OPTIONS) + tuple(
    Variant(CONV, name) for name in ("picard", "anderson", "paper")
)


def sizes(quick: bool) -> dict[str, Any]:
    """Paper-scale sizes, or shrunk ones for a CPU run with `quick`."""
    return {
        "seed": 0,
        "warmup": 2 if quick else 3,
        "steps": 10 if quick else 20,
        "drift": 1e-3,
        "tol": 1e-4,
        "paper_tol": 1e-5,
        "max_iter": 128,
        "contraction_samples": 8,
        "dense_batch": 128,
        "dense_in_features": 15,
        "dense_hidden": 64 if quick else 256,
        "dense_latent": 64,
        "dense_norm_lambda": 1.1,
        "dense_injection_gain": 0.1,
        "data_mixing": 0.5,
        "train_batches": 8,
        "pretrain_steps": 100 if quick else 200,
        "lr": 1e-3,
        "conv_batch": 8 if quick else 128,
        "conv_channels": 16 if quick else 128,
        "conv_image_size": 32,
        "conv_norm": "spectral",
        "conv_norm_lambda": 1.1,
    }


def _solver_options(name: str, s: dict[str, Any]) -> dict[str, Any]:
    return {**SOLVER_OPTIONS[name], "tol": s["paper_tol"] if name == "paper" else s["tol"], "max_iter": s["max_iter"]}


def _slow_energy(s: dict[str, Any], deq_options: dict[str, Any]) -> DenseDEQEnergy:
    hidden = s["dense_hidden"]
    cell = DenseCell(hidden, activation="tanh", norm="spectral", norm_lambda=s["dense_norm_lambda"])
    injection = nn.Linear(s["dense_in_features"], hidden)
    with torch.no_grad():
        raw = torch.randn(hidden, hidden)
        # symmetric: the spectral radius equals the norm, so Picard really contracts at rate ≈ 1/λ
        cell.linear.parametrizations.weight.original.copy_((raw + raw.T) / 2)
        injection.weight.mul_(s["dense_injection_gain"])
        injection.bias.mul_(s["dense_injection_gain"])
    return DenseDEQEnergy(s["dense_in_features"], hidden, s["dense_latent"], cell=cell, injection=injection, **deq_options)


def _correlated_gaussian(s: dict[str, Any], generator: torch.Generator, device: torch.device) -> Tensor:
    """train_batches·dense_batch rows of x = Lε, L unit lower triangular with N(0, data_mixing²) entries."""
    d = s["dense_in_features"]
    mixing = torch.eye(d, device=device) + s["data_mixing"] * torch.randn(d, d, generator=generator, device=device).tril(-1)
    noise = torch.randn(s["train_batches"] * s["dense_batch"], d, generator=generator, device=device)
    return noise @ mixing.T


def _training_step(model: DenseDEQEnergy, data: Tensor, s: dict[str, Any]):
    """A function running one exact-SM training step on the next mini-batch of `data` (cycled)."""
    optimizer = torch.optim.Adam(model.parameters(), lr=s["lr"])
    batches = itertools.cycle(data.split(s["dense_batch"]))
    score = score_from_log_density(model)

    def train_step() -> None:
        optimizer.zero_grad(set_to_none=True)
        exact_score_matching(score, next(batches), trace="batched").backward()
        optimizer.step()

    return train_step


def _set_solver(deq: DEQ, options: dict[str, Any]) -> None:
    """Switches a built DEQ to other solver settings (the keys of `_solver_options`)."""
    for key, value in options.items():
        setattr(deq, key, value)
    deq.reset_warm_start()


def _solve_metrics(deq: DEQ) -> dict[str, float]:
    return {"cell_evals": deq.stats.n_iter, "converged": float(deq.stats.converged), "rel_residual": deq.stats.rel_residual}


def _dense(variant: Variant, s: dict[str, Any], device: torch.device, generator: torch.Generator):
    """The slow energy: trained with the reference solver then switched to the variant's (dense-slow,
    stepping a drifting forward), or untrained with the variant's solver (dense-slow-train, stepping training)."""
    options = _solver_options(variant.name, s)
    data = _correlated_gaussian(s, generator, device)
    if variant.model == SLOW_TRAIN:
        model = _slow_energy(s, options).to(device).train()
        return model, model.deq, data[: s["dense_batch"]], _training_step(model, data, s)
    model = _slow_energy(s, _solver_options(REFERENCE, s)).to(device).train()
    pretrain = _training_step(model, data, s)
    for _ in range(s["pretrain_steps"]):
        pretrain()
    _set_solver(model.deq, options)
    return model.eval(), model.deq, data[: s["dense_batch"]], None


def build(variant: Variant, s: dict[str, Any], device: torch.device) -> Bench:
    """The model of `variant`'s family with its solver settings, and its step (a forward at a
    drifting input, or a training step)."""
    generator = torch.Generator(device=device).manual_seed(s["seed"])
    torch.manual_seed(s["seed"])
    train_step = None
    if variant.model in (SLOW, SLOW_TRAIN):
        model, deq, x, train_step = _dense(variant, s, device, generator)
        injection = model.injection
    else:
        deq = deq_conv_core(s["conv_channels"], s["conv_norm"], s["conv_norm_lambda"], **_solver_options(variant.name, s))
        model = ConvScoreNet(s["conv_channels"], deq).to(device).eval()
        size = s["conv_image_size"]
        x = torch.rand(s["conv_batch"], 3, size, size, generator=generator, device=device)
        injection = model.begin
    with torch.no_grad():
        contraction = deq_contraction(deq, injection(x), s["contraction_samples"])

    def forward_step() -> dict[str, float]:
        nonlocal x
        with torch.no_grad():
            model(x)
        x = x + s["drift"] * torch.randn(x.shape, generator=generator, device=device)
        return _solve_metrics(deq)

    def training_step() -> dict[str, float]:
        train_step()
        return _solve_metrics(deq)

    step = forward_step if train_step is None else training_step
    return Bench(step, count_params(model), {"contraction_factor": contraction, **_settings(deq)})


def _settings(deq: DEQ) -> dict[str, Any]:
    return {"solver": deq.solver, "tol": deq.tol, "warm_start": deq.warm_start}


def targets(result: dict[str, Any]) -> list[Target]:
    """The goal where contraction is slow: Anderson needs ≥ 30 % fewer cell evaluations than Picard,
    on the trained model's forward and along training."""
    return [Target(f"{family}: anderson / picard cell evaluations", ratio_of(result, family, "anderson", "picard", "cell_evals"), 0.7)
            for family in (SLOW, SLOW_TRAIN)]


def plot(result: dict[str, Any], path: Path) -> None:
    """Cell evaluations, time and memory per step, one column per family."""
    bar_grid(result, [("cell_evals", "cell evaluations per forward solve", False), TIME, MEMORY], path)


SUITE = register_suite(Suite(
    name="solver",
    description="Picard vs Anderson, warm start on and off, and the paper's scheme (Picard, absolute "
                "whole-batch tol, K=2), on a trained slow cell, along training, and on a conv DEQ",
    step="dense-slow, conv-score: one no-grad forward at x_t, then x_{t+1} = x_t + drift·N(0, I) (a sampler's "
         "solve); dense-slow-train: one exact-SM training step on the next mini-batch",
    reference=REFERENCE,
    variants=VARIANTS,
    sizes=sizes,
    build=build,
    plot=plot,
    targets=targets,
))
