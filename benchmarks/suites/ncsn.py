"""Suite `ncsn`: the paper's table 5 — memory and time of SSM-VR NCSN, TwoRes and DEQ NCSN.

The three variants are the host's models as the table-5 rows of `configs/paper_rows.py` build them
(CIFAR-10-shaped input (B, 3, 32, 32), ngf 128, 10 noise levels, cin++ conditioning, ELU) trained
with the host's `anneal_ssm_vr` loss (one Rademacher projection) and Adam: "ssm-vr-ncsn" is the
4-cascaded RefineNet (table 8(a), the reference), "twores" the model of table 8(b), and "deq" the
same with `deq_res` turned into a DEQ-ResBlock by `patches.apply_patch` with the row's config.deq
(picard, relative tol 1e-4, implicit gradients, spectrally normalised convolutions, λ = 2). `--quick`
shrinks ngf and the batch. The data are uniform images: the suite measures cost, not fit.

Fields besides the harness's (`peak_memory_mib`: a step's peak above what was allocated when it
began; `step_ms`: median time per training iteration):
- `resident_mib`: what is allocated when a step begins: parameters, their gradients from the
  previous step, Adam's two moments, and the batch (4 × parameter bytes + batch bytes);
- `total_peak_mib`: resident_mib + peak_memory_mib, the step's total peak (the table's "Tot Mem");
- `score_graph_mib`: the memory held for the score's graph (the table's "M. of ∇x log p(x)"):
  the tensor memory that s = model(x̃, labels) allocates and still holds when it returns, with x̃
  requiring grad and the model in training mode, minus s itself, i.e. the activations autograd
  keeps to differentiate s; measured by `benchmarks.memory.retained_bytes` in the same way for all
  three variants, on a fresh batch before training.
"""
from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import torch
from ml_collections import ConfigDict

from benchmarks.harness import Bench, training_bench
from benchmarks.memory import MIB, adam_resident_bytes, retained_bytes
from benchmarks.plots import TIME, bar_grid
from benchmarks.report import Target, add_totals, ratio_of
from benchmarks.suites import Suite, Variant, register_suite
from configs.paper_rows import row_config
from patches import apply_patch
from score_matching.losses import LOSSES
from score_matching.tasks.common import loss_kwargs
from score_matching.tasks.ncsn import build_ncsn_model

FAMILY = "ncsn-cifar10"
ROWS = {
    "ssm-vr-ncsn": "table5/SSM-VR NCSN",
    "twores": "table5/TwoRes-SSM-VR NCSN",
    "deq": "table5/DEQ-SSM-VR NCSN",
}
VARIANTS = tuple(Variant(FAMILY, name) for name in ROWS)
# The goals for DEQ NCSN relative to the SSM-VR NCSN baseline: (field, what, limit).
GOALS = (
    ("total_peak_mib", "total peak memory", 0.55),
    ("score_graph_mib", "memory held for the score's graph", 0.3),
    ("step_ms", "time per iteration", 0.6),
)
# The DEQ's cost over its explicit twin (TwoRes, the same host with the DEQ turned off), against
# the paper's own DEQ / TwoRes ratios in table 5 (20.1 / 18.5 GB, 2104 / 1701 MiB, 481 / 391 ms):
# this separates what the DEQ layer costs from how large the table-8(b) host is against the RefineNet.
PAPER_TWIN_RATIOS = {"total_peak_mib": 20.1 / 18.5, "score_graph_mib": 2104 / 1701, "step_ms": 481 / 391}
IMAGE_CHANNELS, IMAGE_SIZE = 3, 32


def sizes(quick: bool) -> dict[str, Any]:
    """The paper's sizes (batch 128, ngf 128), or shrunk ones for a CPU run with `quick`."""
    return {
        "seed": 0,
        "warmup": 1 if quick else 3,
        "steps": 3 if quick else 10,
        "batch": 8 if quick else 128,
        "ngf": 32 if quick else 128,
    }


def _row_model(variant: Variant, s: dict[str, Any], device: torch.device) -> tuple[ConfigDict, torch.nn.Module]:
    """The variant's table-5 row config (ngf from the sizes) and its model, patched as the row says."""
    config = row_config(ROWS[variant.name])
    config.model.ngf = s["ngf"]
    torch.manual_seed(s["seed"])
    model = build_ncsn_model(config, IMAGE_CHANNELS).to(device)
    probe = torch.rand(2, IMAGE_CHANNELS, IMAGE_SIZE, IMAGE_SIZE, device=device)
    model = apply_patch(model, config.model.name, config.deq, (probe, torch.zeros(2, dtype=torch.long, device=device)))
    return config, model


def score_graph_bytes(model: torch.nn.Module, x: torch.Tensor, labels: torch.Tensor) -> int:
    """Bytes s = model(x, labels) keeps allocated for its graph (x requiring grad), s itself excluded."""
    x = x.detach().requires_grad_(True)
    model.train()
    score, nbytes = retained_bytes(lambda: model(x, labels), x.device)
    return nbytes - score.numel() * score.element_size()


def build(variant: Variant, s: dict[str, Any], device: torch.device) -> Bench:
    """The variant's model and its training step (the row's loss and learning rate) on a fixed
    uniform batch, with noise levels, noise and projections drawn from one seeded generator."""
    config, model = _row_model(variant, s, device)
    loss = functools.partial(LOSSES.get(config.loss.name), model, sigmas=model.sigmas, **loss_kwargs(config))
    generator = torch.Generator(device=device).manual_seed(s["seed"])
    x = torch.rand(s["batch"], IMAGE_CHANNELS, IMAGE_SIZE, IMAGE_SIZE, generator=generator, device=device)
    labels = torch.randint(0, len(model.sigmas), (s["batch"],), generator=generator, device=device)
    graph = score_graph_bytes(model, x, labels)
    resident = adam_resident_bytes(model, x)
    return training_bench(model, lambda: loss(x, generator=generator), config.optim.lr, fields={
        "score_graph_mib": graph / MIB, "resident_mib": resident / MIB, "paper_row": ROWS[variant.name],
    })


def targets(result: dict[str, Any]) -> list[Target]:
    """DEQ NCSN against SSM-VR NCSN: total peak ≤ 0.55×, score-graph memory ≤ 0.3×, time ≤ 0.6×;
    and against TwoRes, each no more than the paper's own DEQ / TwoRes ratio.

    Also adds the derived `total_peak_mib` to every variant (`add_totals`): the runner calls
    `targets` on the merged result just before writing its files, the one place where a field
    derived from the harness's peak and this suite's resident memory can be completed.
    """
    add_totals(result)
    return [
        Target(f"deq / ssm-vr-ncsn: {what}", ratio_of(result, FAMILY, "deq", "ssm-vr-ncsn", field), limit)
        for field, what, limit in GOALS
    ] + [
        Target(f"deq / twores: {what} (limit: the paper's DEQ / TwoRes)", ratio_of(result, FAMILY, "deq", "twores", field),
               PAPER_TWIN_RATIOS[field])
        for field, what, _ in GOALS
    ]


def plot(result: dict[str, Any], path: Path) -> None:
    """Total peak memory, score-graph memory, time per iteration and parameters, per variant."""
    bar_grid(result, [
        ("total_peak_mib", "total peak memory per step (MiB)", False),
        ("score_graph_mib", "memory held for the score's graph (MiB)", False),
        TIME,
        ("params", "parameters", False),
    ], path)


SUITE = register_suite(Suite(
    name="ncsn",
    description="paper table 5: SSM-VR NCSN (RefineNet) vs TwoRes vs DEQ NCSN on CIFAR-10-shaped input",
    step="one training step: forward, annealed SSM-VR loss (one Rademacher projection), backward, Adam step",
    reference="ssm-vr-ncsn",
    variants=VARIANTS,
    sizes=sizes,
    build=build,
    plot=plot,
    targets=targets,
))
