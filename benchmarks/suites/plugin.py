"""Suite `plugin`: an NCSNv2-style model from another codebase, swapped by `deq_plugin.swap` at 1, 2 and 3 blocks.

The model is `benchmarks.codebase_standins.NCSNv2Standin` (identity-shortcut `ResidualBlock`s with
conditional instance norms and dilated convolutions, in `nn.ModuleList`s). "unswapped" is the model as
written (the reference); "deq-1", "deq-2" and "deq-3" swap `res1.1`, then also `res2.1`, then also
`res3.1` with the built-in "residual" kind at its defaults (picard, relative tol 1e-4, phantom
gradients K = 2, spectrally normalised convolutions with λ = 2, norm layers removed). Every variant
trains with denoising score matching at the model's noise levels and Adam on one fixed uniform batch.
Fields: the harness's `peak_memory_mib` (a step's peak above what was allocated when it began),
`step_ms` (median time per training step) and, for the DEQ variants, `deq_iters` (mean forward-solve
iterations per DEQ call over the timed steps).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from benchmarks.codebase_standins import NCSNv2Standin
from benchmarks.harness import Bench, training_bench
from benchmarks.plots import TIME, bar_grid
from benchmarks.suites import Suite, Variant
from deq_plugin import swap

FAMILY = "ncsnv2-standin"
SWAPPED = {"unswapped": (), "deq-1": ("res1.1",), "deq-2": ("res1.1", "res2.1"), "deq-3": ("res1.1", "res2.1", "res3.1")}
VARIANTS = tuple(Variant(FAMILY, name) for name in SWAPPED)
IMAGE_CHANNELS, NUM_CLASSES, LEARNING_RATE = 3, 4, 1e-4


def sizes(quick: bool) -> dict[str, Any]:
    """NCSNv2's CIFAR-10 sizes shrunk (width 64, 32x32, batch 32), or smaller for a CPU run with `quick`."""
    return {
        "seed": 0,
        "warmup": 1 if quick else 3,
        "steps": 5 if quick else 10,
        "batch": 8 if quick else 32,
        "width": 16 if quick else 64,
        "image_size": 16 if quick else 32,
    }


def build(variant: Variant, s: dict[str, Any], device: torch.device) -> Bench:
    """The stand-in with the variant's blocks swapped, and its DSM training step on a fixed batch."""
    torch.manual_seed(s["seed"])
    model = NCSNv2Standin(IMAGE_CHANNELS, s["width"], NUM_CLASSES).to(device)
    generator = torch.Generator(device=device).manual_seed(s["seed"])
    shape = (s["batch"], IMAGE_CHANNELS, s["image_size"], s["image_size"])
    x = torch.rand(shape, generator=generator, device=device)
    labels = torch.randint(0, NUM_CLASSES, (s["batch"],), generator=generator, device=device)
    swap(model, {name: "residual" for name in SWAPPED[variant.name]}, (x, labels))

    def dsm_loss() -> torch.Tensor:
        sigma = model.sigmas[labels][:, None, None, None]
        noise = torch.randn(shape, generator=generator, device=device)
        return (sigma * model(x + sigma * noise, labels) + noise).pow(2).flatten(1).sum(1).mean()

    return training_bench(model, dsm_loss, LEARNING_RATE, fields={"swapped_blocks": len(SWAPPED[variant.name])})


def plot(result: dict[str, Any], path: Path) -> None:
    """Peak memory, step time and solver iterations per variant."""
    bar_grid(result, [
        ("peak_memory_mib", "peak memory per step (MiB)", False),
        TIME,
        ("deq_iters", "forward-solve iterations per DEQ call", False),
    ], path)


SUITE = Suite(
    name="plugin",
    description="an NCSNv2-style model from another codebase, unswapped vs swapped at 1, 2 and 3 blocks",
    step="one training step: forward, DSM loss at the model's noise levels, backward, Adam step",
    reference="unswapped",
    variants=VARIANTS,
    sizes=sizes,
    build=build,
    plot=plot,
)
