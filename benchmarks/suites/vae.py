"""Suite `vae`: the paper's table 1 — memory and time of SSM VAE, Aug(8), Aug(16) and DEQ-SSM VAE.

The variants are the host's SSM-VAE as the CelebA rows of table 1 in `configs/paper_rows.py` build
it (3×64×64 images, m = 64, D_z = 32, batch 128, Gaussian decoder), plus Aug(1), Aug(2) and Aug(3)
(the Aug(8) row with a shallower stack; not paper rows), the DEQ one patched by
`patches.apply_patch` with its row's config.deq (the Aug(1) host's augmented layer as one conv DEQ
block: picard, relative tol 1e-4, phantom gradient K=2, spectrally normalised W, λ = 2). A step is
the task's training step: one backward of `ssm_vae_loss` (SSM-VR of the score estimator on
detached z + the negative-ELBO surrogate) and one Adam step over all parameters. `--quick` shrinks
the image, m and the batch. The data are uniform images: the suite measures cost, not fit.

Fields besides the harness's (`peak_memory_mib`: a step's peak above what was allocated when it
began; `step_ms`: median time per training step):
- `resident_mib`: what is allocated when a step begins: parameters, their gradients, Adam's two
  moments and the batch (4 × parameter bytes + batch bytes), as the `ncsn` suite;
- `total_peak_mib`: resident_mib + peak_memory_mib, the step's total peak. The memory goals use it,
  since the paper's Memory column is the training process's memory, weights and optimiser included;
- `score_net_params`: the score estimator's parameters at the sizes run; `paper_score_net_params`:
  the same at the row's own (paper) sizes, the quantity the table's #Param column matches best;
- for the DEQ, `deq_iters` and `contraction_factor` (worst ||∂f/∂z|| at z*, at initialisation).
"""
from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import torch
from ml_collections import ConfigDict
from torch import nn

from benchmarks.harness import Bench, deq_contraction, training_bench
from benchmarks.plots import MEMORY, TIME, bar_grid
from benchmarks.memory import MIB
from benchmarks.report import Target, ratio_of
from benchmarks.suites import Suite, Variant, register_suite
from benchmarks.report import add_totals
from configs.paper_rows import row_config
from deq_plugin import DEQ
from patches import apply_patch
from score_matching.losses import LOSSES
from score_matching.models import MODELS
from score_matching.tasks.common import loss_kwargs
from score_matching.tasks.vae_objective import model_inputs, reconstruction_nll, ssm_vae_loss

FAMILY = "ssm-vae-celeba"
ROWS = {
    "baseline": "table1/CelebA/SSM VAE",
    "aug8": "table1/CelebA/Aug(8)-SSM VAE",
    "aug16": "table1/CelebA/Aug(16)-SSM VAE",
    "deq": "table1/CelebA/DEQ-SSM VAE",
}
# Shallow explicit stacks: the DEQ with phantom K = 2 records g and two cell steps, so its graph is
# that of an Aug(3) stack; these variants show where its memory sits between them.
SHALLOW = {f"aug{depth}": depth for depth in (1, 2, 3)}
VARIANTS = tuple(Variant(FAMILY, name) for name in (*ROWS, *SHALLOW))
# Table 1 (CelebA): the DEQ's memory above the baseline's in units of one Aug(8) layer's,
# (5.4 − 4.0) / ((7.3 − 4.0) / 8) GB: a measure of the DEQ's own cost that, unlike deq / baseline,
# does not depend on how much memory the rest of the model and the framework hold.
PAPER_DEQ_AUG_LAYERS = (5.4 - 4.0) / ((7.3 - 4.0) / 8)
IMAGE_CHANNELS = 3
AUGMENT = "score_net.augment"


def sizes(quick: bool) -> dict[str, Any]:
    """The paper's CelebA sizes (64×64, m = 64, batch 128), or shrunk ones for a CPU run with `quick`
    (large enough that convolutions, not per-operation overhead, dominate a step)."""
    return {
        "seed": 0,
        "warmup": 1 if quick else 3,
        "steps": 3 if quick else 10,
        "batch": 16 if quick else 128,
        "image_size": 32 if quick else 64,
        "width": 16 if quick else 64,
        "contraction_samples": 4,
    }


def _build_model(config: ConfigDict, image_size: int, device: torch.device) -> nn.Module:
    """The row's SSM-VAE at `image_size`, patched as the row says, on `device`."""
    m = config.model
    shape = (IMAGE_CHANNELS, image_size, image_size)
    model = MODELS.get(m.name)(
        image_shape=shape, width=m.vae_width, z_dim=m.z_dim, noise_dim=m.noise_dim,
        augment_depth=m.augment_depth, likelihood=m.likelihood,
    ).to(device)
    probe = torch.rand(2, *shape, device=device)
    return apply_patch(model, m.name, config.deq, (probe, torch.zeros(2, m.z_dim, device=device)))


def _count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _augment_input(model: nn.Module, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """The input y of the score estimator's augmented layer for (x, z), recorded by a hook."""
    seen: list[torch.Tensor] = []
    handle = model.get_submodule(AUGMENT).register_forward_pre_hook(lambda module, args: seen.append(args[0]))
    try:
        model.score(x, z)
    finally:
        handle.remove()
    return seen[0]


def build(variant: Variant, s: dict[str, Any], device: torch.device) -> Bench:
    """The variant's model and its training step on a fixed uniform batch (seeded encoder noise
    and projections through the global generator, reseeded here)."""
    row = ROWS.get(variant.name, ROWS["aug8"])
    config = row_config(row)
    if variant.name in SHALLOW:
        config.model.augment_depth = SHALLOW[variant.name]
    paper_params = _count(_build_model(config, config.data.image_size, torch.device("cpu")).score_net)
    config.model.vae_width = s["width"]
    torch.manual_seed(s["seed"])
    model = _build_model(config, s["image_size"], device)
    generator = torch.Generator(device=device).manual_seed(s["seed"])
    images = torch.rand(s["batch"], IMAGE_CHANNELS, s["image_size"], s["image_size"], generator=generator, device=device)
    x = model_inputs(images, config.model.likelihood, generator)
    score_loss = functools.partial(LOSSES.get(config.loss.name), **loss_kwargs(config))
    nll = functools.partial(reconstruction_nll, likelihood=config.model.likelihood, log_std=config.model.decoder_log_std)
    param_bytes = sum(p.numel() * p.element_size() for p in model.parameters() if p.requires_grad)
    fields: dict[str, Any] = {
        "resident_mib": (4 * param_bytes + x.numel() * x.element_size()) / MIB,
        "score_net_params": _count(model.score_net), "paper_score_net_params": paper_params,
        "paper_row": ROWS.get(variant.name, "—"),
    }
    deqs = [m for m in model.modules() if isinstance(m, DEQ)]
    if deqs:
        block = model.get_submodule(AUGMENT)
        with torch.no_grad():
            y = _augment_input(model, x, model.encode(x))
            fields["contraction_factor"] = deq_contraction(deqs[0], block.injection(y), s["contraction_samples"])
    torch.manual_seed(s["seed"])
    return training_bench(model, lambda: ssm_vae_loss(model, x, score_loss, nll), config.optim.lr, fields)


def targets(result: dict[str, Any]) -> list[Target]:
    """DEQ-SSM VAE: total peak memory ≤ 1.4× the baseline's and ≤ 0.4× Aug(16)'s, time ≤ 0.35× Aug(16)'s,
    and its extra memory over the baseline, in Aug(8) layers, no more than the paper's.

    Also completes every variant's `total_peak_mib` (`add_totals`, called here as in the `ncsn`
    suite: the runner calls `targets` on the merged result just before writing its files).
    """
    add_totals(result)
    return [
        Target("deq / baseline: total peak memory", ratio_of(result, FAMILY, "deq", "baseline", "total_peak_mib"), 1.4),
        Target("deq / aug16: total peak memory", ratio_of(result, FAMILY, "deq", "aug16", "total_peak_mib"), 0.4),
        Target("deq / aug16: time per step", ratio_of(result, FAMILY, "deq", "aug16", "step_ms"), 0.35),
        Target("deq − baseline total peak, in Aug(8) layers (limit: the paper's)", deq_aug_layers(result),
               PAPER_DEQ_AUG_LAYERS),
    ]


def deq_aug_layers(result: dict[str, Any]) -> float | None:
    """(deq − baseline) / ((aug8 − baseline) / 8) of total_peak_mib: the DEQ's extra memory counted in
    the memory one of Aug(8)'s stacked layers adds; None if a variant is missing."""
    total = {v["name"]: v.get("total_peak_mib") for v in result["variants"] if v["model"] == FAMILY}
    base, aug8, deq = total.get("baseline"), total.get("aug8"), total.get("deq")
    if base is None or aug8 is None or deq is None or aug8 == base:
        return None
    return (deq - base) / ((aug8 - base) / 8)


def plot(result: dict[str, Any], path: Path) -> None:
    """Step and total peak memory, time per step and score-estimator parameters, per variant."""
    total = ("total_peak_mib", "total peak memory per step (MiB)", False)
    bar_grid(result, [MEMORY, total, TIME, ("score_net_params", "score-estimator parameters", False)], path)


SUITE = register_suite(Suite(
    name="vae",
    description="paper table 1: SSM VAE vs Aug(8) vs Aug(16) vs DEQ-SSM VAE (CelebA-shaped input)",
    step="one training step: encoder, decoder and score estimator forward, SSM-VR (one Gaussian projection) "
    "+ negative-ELBO surrogate, one backward, Adam step",
    reference="baseline",
    variants=VARIANTS,
    sizes=sizes,
    build=build,
    plot=plot,
    targets=targets,
))
