"""The equal-budget NCSN comparison's table, goals and side-by-side sample grids.

    python -m benchmarks.ncsn_mnist_report OUTPUT_DIR   (the folder benchmarks/ncsn_mnist.sh wrote)

Reads each variant's eval.json, metrics.jsonl and config.json and writes OUTPUT_DIR/comparison.json,
comparison.md and comparison.png (the final grids in one picture). Besides the run's own figures it
measures, from each variant's config, one training step's memory on the CPU as the `ncsn` suite
does: `step_peak_mib`, the tensor memory a step allocates at its peak (`benchmarks.memory`), and
`total_peak_mib`, that plus what is resident when the step begins (parameters, their gradients,
Adam's two moments and the batch). The process RSS of training (`train_rss_peak_mib`) is also
listed, but about 1 GiB of it is the interpreter and torch, the same for every variant.
"""
from __future__ import annotations

import argparse
import functools
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from ml_collections import ConfigDict

from benchmarks.memory import MIB, adam_resident_bytes, cpu_peak_bytes
from benchmarks.report import Target, format_value, goals_table
from configs.defaults.ncsn import get_config as ncsn_defaults
from patches import apply_patch
from score_matching.losses import LOSSES
from score_matching.metrics_log import read_metrics
from score_matching.tasks.common import loss_kwargs
from score_matching.tasks.ncsn import build_ncsn_model

VARIANTS = ("refinenet", "twores", "twores-deep", "deq-implicit", "deq-K2", "deq-K5")
BASELINE = "refinenet"
DEQ_VARIANTS = ("deq-implicit", "deq-K2", "deq-K5")
# The bar for "same quality at the memory of a shallow model": the best DEQ's classifier FD
# within 10 % of the RefineNet's, at no more than 0.6× its training step's peak memory.
FD_RATIO_LIMIT, MEMORY_RATIO_LIMIT = 1.1, 0.6
IMAGE_SHAPE = (1, 28, 28)
ANALYSIS = "ncsn-mnist-equal-budget"


def step_memory_mib(config: ConfigDict, seed: int = 0) -> dict[str, float]:
    """One training step's tensor peak and total peak (MiB) of the config's model on uniform MNIST-shaped data."""
    torch.manual_seed(seed)
    model = build_ncsn_model(config, IMAGE_SHAPE[0])
    probe = torch.rand(2, *IMAGE_SHAPE)
    model = apply_patch(model, config.model.name, config.deq, (probe, torch.zeros(2, dtype=torch.long)))
    loss = functools.partial(LOSSES.get(config.loss.name), model, sigmas=model.sigmas, **loss_kwargs(config))
    generator = torch.Generator().manual_seed(seed)
    x = torch.rand(config.training.batch_size, *IMAGE_SHAPE, generator=generator)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.optim.lr)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        loss(x, generator=generator).backward()
        optimizer.step()

    step_peak = cpu_peak_bytes(step)
    resident = adam_resident_bytes(model, x)
    return {"step_peak_mib": step_peak / MIB, "total_peak_mib": (step_peak + resident) / MIB,
            "params": sum(p.numel() for p in model.parameters())}


def variant_row(folder: Path) -> dict[str, Any]:
    """The figures of one variant's result folder."""
    evaluation = json.loads((folder / "eval.json").read_text())
    config = ncsn_defaults()  # fields added since a run wrote its config.json keep their defaults
    config.update(json.loads((folder / "config.json").read_text()))
    steps = [m for m in read_metrics(folder / "metrics.jsonl") if "time_per_step_ms" in m]
    row = {
        "mnist_classifier_fd": evaluation["mnist_classifier_fd"],
        "fd_samples": evaluation["mnist_classifier_fd_samples"],
        "confident_share": evaluation["classifier_confident_share"],
        "confident_classes": evaluation["classifier_confident_classes"],
        "class_entropy": evaluation["classifier_class_entropy"],
        "test_loss": evaluation[f"test_{config.loss.name}_loss"],
        "train_rss_peak_mib": evaluation["train_peak_memory_mib"],
        "step_ms": evaluation["train_time_per_step_ms"],
        "steps": evaluation["step"],
        "final_train_loss": float(np.mean([m["loss"] for m in steps[-5:]])),
        **step_memory_mib(config),
    }
    iterations = [v for k, v in evaluation.items() if k.startswith("train_deq/") and k.endswith("/iterations")]
    if iterations:
        row["deq_train_iterations"] = float(np.mean(iterations))
        backward = [v for k, v in evaluation.items() if k.startswith("train_deq/") and k.endswith("/backward_iterations")]
        row["deq_train_backward_iterations"] = float(np.mean(backward)) if backward else None
    return row


def targets(rows: dict[str, dict[str, Any]]) -> list[Target]:
    """The best DEQ variant (lowest FD) against the RefineNet: FD ratio ≤ 1.1 and total step peak ≤ 0.6×."""
    deqs = [name for name in DEQ_VARIANTS if name in rows]
    if BASELINE not in rows or not deqs:
        return []
    best = min(deqs, key=lambda name: rows[name]["mnist_classifier_fd"])
    base = rows[BASELINE]
    return [
        Target(f"{best} / {BASELINE}: classifier FD", rows[best]["mnist_classifier_fd"] / base["mnist_classifier_fd"],
               FD_RATIO_LIMIT),
        Target(f"{best} / {BASELINE}: total peak memory of a training step",
               rows[best]["total_peak_mib"] / base["total_peak_mib"], MEMORY_RATIO_LIMIT),
    ]


COLUMNS = (
    ("mnist_classifier_fd", "classifier FD"), ("confident_share", "confident share"),
    ("confident_classes", "classes"), ("class_entropy", "class entropy"), ("test_loss", "test DSM loss"),
    ("total_peak_mib", "step total peak MiB"), ("step_peak_mib", "step peak MiB"),
    ("train_rss_peak_mib", "training RSS MiB"), ("step_ms", "ms / step"), ("params", "params"),
    ("deq_train_iterations", "DEQ iterations (fwd)"), ("deq_train_backward_iterations", "DEQ iterations (bwd)"),
)


def markdown(rows: dict[str, dict[str, Any]], goals: list[dict[str, Any]]) -> str:
    """The variants' table and the goals (in `Target.as_dict()` form)."""
    lines = ["| variant | " + " | ".join(title for _, title in COLUMNS) + " |", "|---" * (len(COLUMNS) + 1) + "|"]
    for name, row in rows.items():
        lines.append(f"| {name} | " + " | ".join(format_value(row.get(key)) for key, _ in COLUMNS) + " |")
    return "\n".join([*lines, "", *goals_table(goals)]) + "\n"


def grid_picture(folder: Path, names: list[str], path: Path) -> None:
    """The variants' final sample grids side by side, titled by variant."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(names), figsize=(3 * len(names), 3.3))
    for ax, name in zip(np.atleast_1d(axes), names):
        grid = sorted((folder / name).glob("samples_step_*.png"))[-1]
        ax.imshow(plt.imread(grid), cmap="gray")
        ax.set_title(name)
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_report(folder: Path) -> dict[str, Any]:
    """Builds and writes comparison.{json,md,png} in `folder`; returns the JSON's content."""
    names = [name for name in VARIANTS if (folder / name / "eval.json").is_file()]
    if not names:
        raise FileNotFoundError(f"no variant results (<variant>/eval.json) in {folder}; valid variants: {list(VARIANTS)}")
    rows = {name: variant_row(folder / name) for name in names}
    goals = [g.as_dict() for g in targets(rows)]
    report = {"analysis": ANALYSIS, "variants": rows, "targets": goals}
    (folder / "comparison.json").write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")
    (folder / "comparison.md").write_text(markdown(rows, goals))
    grid_picture(folder, names, folder / "comparison.png")
    return report


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", type=Path)
    args = parser.parse_args(argv)
    write_report(args.folder)
    print(f"wrote {args.folder}/comparison.{{json,md,png}}")


if __name__ == "__main__":
    main()
