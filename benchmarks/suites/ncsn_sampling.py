"""Suite `ncsn_sampling`: DEQ solver iterations per annealed-Langevin step, warm start off vs on.

The model is the quick-start DEQ NCSN (`configs/ncsn_deq.py`: TwoRes on MNIST with `deq_res`
a DEQ-ResBlock, picard, relative tol 1e-4), trained by this suite with `main.py`'s training loop
for `train_steps` steps (seeded, so reproducible; resumed if interrupted) the first time, into
runs/benchmarks/ncsn_sampling-<digest of the training config>/, and reused from there afterwards
(delete that folder to retrain, e.g. after a change to the model code). Both variants load its EMA
weights; they differ only in config.deq.warm_start, which the patch hands to the DEQ layer:
"cold" (the reference) starts every solve from zero, "warm" from the previous Langevin step's z*.
MNIST must be under the data root ($SCORE_MATCHING_DATA, else ./data; fetched when missing).

One step is one whole annealed Langevin run (`annealed_langevin_dynamics`, the config's 10 noise
levels × `n_steps_each` steps + the denoising step) of `n_samples` chains from the same seeded
uniform start and noise; the warm state is cleared before each run. Per run: `deq_iters_per_step`,
the mean forward-solve iterations of the DEQ layers per score evaluation, read through
`patches.deq_layer_stats` in the sampler's callback, and `deq_converged`, the fraction of solves
that met the tolerance. Fields: `iters_by_level` (the mean per noise level, the denoising step
last); `z_change_by_level`, from one extra, unmeasured run: the mean relative change
‖z*_t − z*_{t−1}‖ / ‖z*_t‖ of the fixed point between consecutive Langevin steps, which bounds
what a warm start can save (with Picard contracting by r per iteration, a cold solve needs
≈ log(tol)/log(r) iterations and a warm one ≈ log(tol/δ)/log(r) for a change δ); and, for
"warm", `sample_max_abs_diff` and `sample_rel_diff`: max |x_warm − x_cold| and
‖x_warm − x_cold‖ / ‖x_cold‖ of the final samples against a cold run in the same process.
"""
from __future__ import annotations

import hashlib
import math
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import torch
from ml_collections import ConfigDict

from benchmarks.harness import Bench, count_params
from benchmarks.plots import families, save, title
from benchmarks.report import Target, ratio_of
from benchmarks.suites import Suite, Variant, register_suite
from configs.ncsn_deq import get_config
from deq_plugin import DEQ
from main import model_transform_for
from patches import deq_layer_stats
from score_matching import run
from score_matching.checkpoint import load_checkpoint, load_state_strict
from score_matching.ema import ExponentialMovingAverage
from score_matching.sampling import annealed_langevin_dynamics
from score_matching.tasks import build_task

FAMILY = "ncsn-deq-mnist"
VARIANTS = (Variant(FAMILY, "cold"), Variant(FAMILY, "warm"))
CHECKPOINTS = Path(__file__).resolve().parents[2] / "runs" / "benchmarks"
GOAL_ITERATION_RATIO = 3.0


def sizes(quick: bool) -> dict[str, Any]:
    """The quick-start model either way; `quick` shortens the chains and takes fewer of them."""
    return {
        "seed": 0,
        "warmup": 1,
        "steps": 1 if quick else 3,
        "train_steps": 200,
        "n_samples": 36 if quick else 64,
        "n_steps_each": 10 if quick else 100,
    }


def training_config(s: dict[str, Any], device: torch.device) -> ConfigDict:
    """configs/ncsn_deq.py trained for `train_steps` steps on `device`, with cold DEQ solves."""
    config = get_config()
    config.device = device.type
    config.seed = s["seed"]
    config.training.n_iters = s["train_steps"]
    config.training.sample_freq = 0
    config.deq.warm_start = False
    return config


def trained_checkpoint(config: ConfigDict) -> Path:
    """The checkpoint of `config`'s finished training run. The loop resumes from the folder's
    checkpoint, so a finished run returns at once and an interrupted one is completed."""
    digest = hashlib.sha256(config.to_json(sort_keys=True).encode()).hexdigest()[:12]
    workdir = CHECKPOINTS / f"ncsn_sampling-{digest}"
    run.train(config, str(workdir), model_transform_for(config), deq_layer_stats)
    return workdir / run.PREEMPTION_CHECKPOINT


def load_model(config: ConfigDict, checkpoint: Path, device: torch.device) -> torch.nn.Module:
    """The task's (patched) model with the checkpoint's EMA weights, in eval mode."""
    task = build_task(config, device, model_transform_for(config))
    state = load_checkpoint(checkpoint, map_location=device)
    load_state_strict(task.model, state["model"], f"model in {checkpoint}")
    ema = ExponentialMovingAverage(task.model, config.model.ema_rate)
    ema.load_state_dict(state["ema"])
    ema.swap_in(task.model)
    return task.model.eval()


def _iterations(model: torch.nn.Module) -> tuple[float, float]:
    """(solver iterations summed over the DEQ layers, 1 if all converged else 0) of the latest forward."""
    stats = deq_layer_stats(model)
    iters = sum(v for k, v in stats.items() if k.endswith("/iterations"))
    converged = min(v for k, v in stats.items() if k.endswith("/converged"))
    return iters, converged


@dataclass
class LangevinRun:
    """One sampling run: the final samples and, per Langevin step, the solver iterations, whether
    every solve converged, and, if tracked, the relative change ||z*_t − z*_{t−1}|| / ||z*_t|| of
    the DEQ layers' fixed points since the previous step (none for the first step)."""

    samples: torch.Tensor
    iterations: list[float]
    converged: list[float]
    z_changes: list[float]


def langevin_run(
    model: torch.nn.Module, config: ConfigDict, s: dict[str, Any], device: torch.device, track_changes: bool = False
) -> LangevinRun:
    """One seeded annealed Langevin run from a cleared warm state; `track_changes` records the
    fixed points' changes (keeping the previous z* alive, so not in measured runs)."""
    deqs = [m for m in model.modules() if isinstance(m, DEQ)]
    for deq in deqs:
        deq.reset_warm_start()
    previous: dict[DEQ, torch.Tensor] = {}
    z_changes: list[float] = []

    def record_change(module: DEQ, args: tuple, z: torch.Tensor) -> None:
        if module in previous:
            z_changes.append(((z - previous[module]).norm() / z.norm()).item())
        previous[module] = z

    generator = torch.Generator(device=device).manual_seed(s["seed"])
    size = config.data.image_size
    x_init = torch.rand((s["n_samples"], 1, size, size), generator=generator, device=device)
    per_step: list[tuple[float, float]] = []
    handles = [deq.register_forward_hook(record_change) for deq in deqs] if track_changes else []
    try:
        with torch.no_grad():
            x = annealed_langevin_dynamics(
                model, x_init, model.sigmas, s["n_steps_each"], config.sampling.step_lr, config.sampling.denoise,
                generator=generator, callback=lambda step, x: per_step.append(_iterations(model)),
            )
    finally:
        for handle in handles:
            handle.remove()
    return LangevinRun(x, [i for i, _ in per_step], [c for _, c in per_step], z_changes)


def _by_level(values: list[float], n_steps_each: int, digits: int = 2) -> list[float]:
    """Means over each noise level's steps (NaNs skipped), the denoising step last."""
    levels = [values[i:i + n_steps_each] for i in range(0, len(values), n_steps_each)]
    return [round(statistics.fmean(v for v in level if not math.isnan(v)), digits) for level in levels]


def build(variant: Variant, s: dict[str, Any], device: torch.device) -> Bench:
    """The trained DEQ NCSN with warm start off ("cold") or on ("warm"); a step is one Langevin run."""
    config = training_config(s, device)
    checkpoint = trained_checkpoint(config)
    config.deq.warm_start = variant.name == "warm"
    model = load_model(config, checkpoint, device)
    fields: dict[str, Any] = {"checkpoint": str(checkpoint.relative_to(CHECKPOINTS.parents[1])), "tol": config.deq.tol,
                              "solver": config.deq.solver}
    diagnostic = langevin_run(model, config, s, device, track_changes=True)
    fields["z_change_by_level"] = _by_level([math.nan, *diagnostic.z_changes], s["n_steps_each"], digits=4)
    if variant.name == "warm":
        cold_config = training_config(s, device)
        reference = langevin_run(load_model(cold_config, checkpoint, device), cold_config, s, device).samples

    def step() -> dict[str, float]:
        out = langevin_run(model, config, s, device)
        fields.update(langevin_steps=len(out.iterations), iters_by_level=_by_level(out.iterations, s["n_steps_each"]))
        if variant.name == "warm":
            diff = out.samples - reference
            fields.update(
                sample_max_abs_diff=diff.abs().max().item(), sample_rel_diff=(diff.norm() / reference.norm()).item()
            )
        return {
            "deq_iters_per_step": statistics.fmean(out.iterations), "deq_converged": statistics.fmean(out.converged)
        }

    return Bench(step, count_params(model), fields)


def targets(result: dict[str, Any]) -> list[Target]:
    """Warm start: at least 3× fewer solver iterations per Langevin step than cold start, and final
    samples within the solver tolerance of the cold run's (relative difference ≤ tol)."""
    ratio = ratio_of(result, FAMILY, "cold", "warm", "deq_iters_per_step")
    warm = next(v for v in result["variants"] if v["name"] == "warm")
    return [
        Target("cold / warm DEQ iterations per Langevin step", ratio, GOAL_ITERATION_RATIO, at_most=False),
        Target("warm vs cold final samples: ||x_warm - x_cold|| / ||x_cold||", warm.get("sample_rel_diff"),
               warm.get("tol") or get_config().deq.tol),
    ]


def plot(result: dict[str, Any], path: Path) -> None:
    """Per noise level: mean solver iterations per Langevin step (cold vs warm), and the relative
    change of the fixed point between consecutive steps."""
    fig, (iters_ax, change_ax) = plt.subplots(1, 2, figsize=(12, 4.2))
    for v in families(result)[FAMILY]:
        if v.get("iters_by_level"):
            levels = range(len(v["iters_by_level"]))
            iters_ax.plot(levels, v["iters_by_level"], "o-", label=f"{v['name']} (mean {v['deq_iters_per_step']:.2f})")
        if v["name"] == result["reference"] and v.get("z_change_by_level"):
            change_ax.plot(range(len(v["z_change_by_level"])), v["z_change_by_level"], "o-", color="tab:gray")
    iters_ax.set_ylabel("DEQ solver iterations per Langevin step")
    iters_ax.legend()
    change_ax.set_ylabel("||z*_t - z*_(t-1)|| / ||z*_t|| between steps")
    change_ax.set_yscale("log")
    for ax in (iters_ax, change_ax):
        ax.set_xlabel("noise level (σ large → small); last point: denoising step")
        ax.grid(alpha=0.3)
    fig.suptitle(title(result))
    save(fig, path)


SUITE = register_suite(Suite(
    name="ncsn_sampling",
    description="DEQ NCSN annealed Langevin sampling: solver iterations per step with warm start off vs on",
    step="one annealed Langevin run (all noise levels + denoising) of n_samples chains, no grad",
    reference="cold",
    variants=VARIANTS,
    sizes=sizes,
    build=build,
    plot=plot,
    targets=targets,
))
