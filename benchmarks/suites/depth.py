"""Suite `depth`: memory and time of explicit stacks of growing depth against their DEQ twin.

Two model families, each with variants explicit-1 … explicit-32 and deq, reference explicit-2:
- "conv-score": score(x) = conv(core(conv(x))) on CIFAR-10-shaped input (B, 3, 32, 32), core =
  `depth` ResBlocks x + h(x), h = conv3x3-softplus-conv3x3 with C channels, or the DEQ
  z* = h(z*) + u with u the first conv's output and h's convolutions spectrally normalised so
  that h contracts (picard, relative tol 1e-4, phantom gradient K=2). Loss: SSM-VR with one
  Rademacher projection per sample, the score being the net itself (so the loss needs a
  Hessian-vector product).
- "dkef-features": the host's DKEF (`score_matching.models.dkef`) whose kernels' feature nets φ_r
  (d=15 like Parkinsons, width 30, softplus, latent 64) have `depth` activated layers, or depth 2
  with each φ_r's hidden stack turned into a dense DEQ z = softplus(W z + u), u = softplus(Linear(x)),
  W Frobenius-normalised, by the host's own patch (`patches.density`). Loss: DKEF's training loss,
  α fitted on the first half of the batch and exact score matching (batched Hessian trace) on the
  second (`split_batch_loss`).
Data are synthetic (uniform images, standard-normal rows): the suite measures cost, not fit. DEQ
variants report `deq_iters` (mean forward-solve iterations per DEQ call) and `contraction_factor`
(the worst ||∂f/∂z|| at z* over a few samples, at initialisation).
"""
from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import torch

from benchmarks.harness import Bench, deq_contraction, training_bench
from benchmarks.models import ConvScoreNet, deq_conv_core, explicit_conv_core
from benchmarks.plots import MEMORY, TIME, families, save, title
from benchmarks.report import Target, ratio_of
from benchmarks.suites import Suite, Variant, register_suite
from deq_plugin import BlockSpec, swap
from patches import swappable_layers
from score_matching.losses import exact_score_matching, sliced_score_matching_vr
from score_matching.models.dkef import DKEF, split_batch_loss

CONV, DKEF_FEATURES = "conv-score", "dkef-features"
DEPTHS = (1, 2, 4, 8, 16, 32)
# The DEQ first: under a time budget it runs right after its family's reference.
VARIANTS = tuple(
    Variant(family, name) for family in (CONV, DKEF_FEATURES) for name in ("deq", *(f"explicit-{d}" for d in DEPTHS))
)


def sizes(quick: bool) -> dict[str, Any]:
    """Paper-scale sizes (batch 128, 128 channels, 200 inducing points), or shrunk ones with `quick`."""
    return {
        "seed": 0,
        "warmup": 2 if quick else 3,
        "steps": 5 if quick else 10,
        "tol": 1e-4,
        "phantom_steps": 2,
        "max_iter": 128,
        "contraction_samples": 8,
        "conv_batch": 8 if quick else 128,
        "conv_channels": 16 if quick else 128,
        "conv_image_size": 32,
        "conv_norm": "spectral",
        "conv_norm_lambda": 1.1,
        "conv_lr": 1e-4,
        "dkef_batch": 32 if quick else 128,
        "dkef_in_features": 15,
        "dkef_hidden": 30,
        "dkef_latent": 64,
        "dkef_n_inducing": 20 if quick else 200,
        "dkef_norm_lambda": 1.2,
        "dkef_lr": 1e-3,
    }


def _deq_options(s: dict[str, Any]) -> dict[str, Any]:
    return {"solver": "picard", "tol": s["tol"], "max_iter": s["max_iter"], "grad": "phantom",
            "phantom_steps": s["phantom_steps"]}


def _depth(variant: Variant) -> int:
    return int(variant.name.removeprefix("explicit-"))


def _conv(variant: Variant, s: dict[str, Any], device: torch.device) -> Bench:
    torch.manual_seed(s["seed"])
    channels = s["conv_channels"]
    if variant.name == "deq":
        core = deq_conv_core(channels, s["conv_norm"], s["conv_norm_lambda"], **_deq_options(s))
    else:
        core = explicit_conv_core(channels, _depth(variant))
    net = ConvScoreNet(channels, core).to(device)
    generator = torch.Generator(device=device).manual_seed(s["seed"])
    size = s["conv_image_size"]
    x = torch.rand(s["conv_batch"], 3, size, size, generator=generator, device=device)
    fields = {}
    if variant.name == "deq":
        with torch.no_grad():
            fields["contraction_factor"] = deq_contraction(core, net.begin(x), s["contraction_samples"])
    # The projections come from the seeded generator too, so every variant sees the same ones.
    return training_bench(net, lambda: sliced_score_matching_vr(net, x, generator=generator), s["conv_lr"], fields)


def _dkef(variant: Variant, s: dict[str, Any], device: torch.device) -> Bench:
    torch.manual_seed(s["seed"])
    deq = variant.name == "deq"
    model = DKEF(
        s["dkef_in_features"], n_inducing=s["dkef_n_inducing"], hidden=s["dkef_hidden"],
        depth=2 if deq else _depth(variant), latent=s["dkef_latent"],
    ).to(device)
    generator = torch.Generator(device=device).manual_seed(s["seed"])
    data = torch.randn(max(s["dkef_batch"], s["dkef_n_inducing"]), s["dkef_in_features"], generator=generator, device=device)
    model.init_inducing_points(data, generator=generator)
    x = data[: s["dkef_batch"]]
    fields = {}
    if deq:
        layer = swappable_layers(model, "dkef")["feature"]
        options = {**layer.options, "norm": "frobenius", "norm_lambda": s["dkef_norm_lambda"], **_deq_options(s)}
        swap(model, {target: BlockSpec(layer.block, options) for target in layer.targets}, (x,))
        first = model.features[0]
        with torch.no_grad():
            fields["contraction_factor"] = deq_contraction(first.stack.deq, first.in_layer(x), s["contraction_samples"])
    loss = functools.partial(exact_score_matching, trace="batched")
    return training_bench(model, lambda: split_batch_loss(model, x, loss), s["dkef_lr"], fields)


def build(variant: Variant, s: dict[str, Any], device: torch.device) -> Bench:
    """The conv score net or the DKEF of `variant`, with its training step."""
    return _conv(variant, s, device) if variant.model == CONV else _dkef(variant, s, device)


def targets(result: dict[str, Any]) -> list[Target]:
    """The project's goals for the DEQ: memory ≤ 1.05× and ≤ 0.25× explicit-16's, time ≤ 1.2×."""
    checks = []
    for model in families(result):
        checks += [
            Target(f"{model}: DEQ memory / explicit-2", ratio_of(result, model, "deq", "explicit-2", "peak_memory_mib"), 1.05),
            Target(f"{model}: DEQ memory / explicit-16", ratio_of(result, model, "deq", "explicit-16", "peak_memory_mib"), 0.25),
            Target(f"{model}: DEQ time / explicit-2", ratio_of(result, model, "deq", "explicit-2", "step_ms"), 1.2),
        ]
    return checks


def plot(result: dict[str, Any], path: Path) -> None:
    """Memory (top) and time (bottom) against depth, one column per family, the DEQ as a line."""
    groups = families(result)
    fig, axes = plt.subplots(2, len(groups), figsize=(5.5 * len(groups), 7), squeeze=False)
    for col, (model, variants) in enumerate(groups.items()):
        explicit = [v for v in variants if v["name"].startswith("explicit-") and v["step_ms"] is not None]
        deq = next((v for v in variants if v["name"] == "deq" and v["step_ms"] is not None), None)
        for row, (field, label, _) in enumerate((MEMORY, TIME)):
            ax = axes[row][col]
            depths = [int(v["name"].removeprefix("explicit-")) for v in explicit]
            ax.plot(depths, [v[field] for v in explicit], "o-", label="explicit stack")
            if deq is not None:
                iters = f", {deq['deq_iters']:.1f} solver iterations" if "deq_iters" in deq else ""
                ax.axhline(deq[field], color="tab:red", linestyle="--", label=f"DEQ (K=2{iters})")
            ax.set_xscale("log", base=2)
            ax.set_xticks(list(DEPTHS), [str(d) for d in DEPTHS])
            ax.set_xlabel("depth (ResBlocks)" if model == CONV else "depth (feature-net layers)")
            ax.set_ylabel(label)
            ax.set_title(model if row == 0 else "")
            ax.grid(alpha=0.3)
            ax.legend()
    fig.suptitle(title(result))
    save(fig, path)


SUITE = register_suite(Suite(
    name="depth",
    description="explicit stacks of 1-32 blocks vs their DEQ twin (conv score net with SSM-VR; DKEF with exact SM)",
    step="one training step: forward, loss (SSM-VR or DKEF's exact-SM loss), backward, Adam step",
    reference="explicit-2",
    variants=VARIANTS,
    sizes=sizes,
    build=build,
    plot=plot,
    targets=targets,
))
