"""Measuring one benchmark variant: warm-up, peak memory of one step, then the median step time."""
from __future__ import annotations

import os
import platform
import statistics
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from torch import nn

from benchmarks.memory import MIB, peak_bytes
from deq_plugin import DEQ, contraction_factor

StepMetrics = dict[str, float]


@dataclass
class Bench:
    """A built variant: `step()` runs one measured step and may return per-step metrics.

    The per-step metrics (e.g. solver iterations) are averaged over the timed steps; `fields` are
    fixed facts about the variant (e.g. a contraction factor) copied into its result as they are.
    """

    step: Callable[[], StepMetrics | None]
    params: int
    fields: dict[str, Any] = field(default_factory=dict)


def count_params(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def synchronize(device: torch.device) -> None:
    """Waits for queued device work, so that wall-clock times cover it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(bench: Bench, device: torch.device, warmup: int, steps: int) -> dict[str, Any]:
    """Runs `warmup` steps, two under the memory probe (see `benchmarks.memory`), then `steps` timed.

    Returns peak_memory_mib (the probed step's peak above its starting allocation), step_ms (the
    median of the timed steps), step_ms_spread (their interquartile range) and the mean of every
    per-step metric over the timed steps.
    """
    if warmup < 1 or steps < 1:
        raise ValueError(f"warmup and steps must be >= 1, got warmup={warmup}, steps={steps}")
    for _ in range(warmup):
        bench.step()
    peak = peak_bytes(bench.step, device)
    times, metrics = [], []
    for _ in range(steps):
        synchronize(device)
        start = time.perf_counter()
        out = bench.step()
        synchronize(device)
        times.append((time.perf_counter() - start) * 1e3)
        metrics.append(out or {})
    quartiles = statistics.quantiles(times, n=4) if len(times) > 1 else [times[0]] * 3
    result: dict[str, Any] = {
        "params": bench.params,
        "peak_memory_mib": peak / MIB,
        "step_ms": statistics.median(times),
        "step_ms_spread": quartiles[2] - quartiles[0],
    }
    for key in metrics[0]:
        result[key] = statistics.fmean(m[key] for m in metrics)
    result.update(bench.fields)
    return result


def training_bench(
    model: nn.Module, loss_fn: Callable[[], torch.Tensor], lr: float, fields: dict[str, Any] | None = None
) -> Bench:
    """A Bench whose step is zero_grad, loss_fn(), backward and an Adam step on `model`.

    Gradients are set to None before each step, so the probed peak includes them. If the model
    has DEQ layers, each step reports `deq_iters`, the mean forward-solve iterations per DEQ call.
    """
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    counter = DEQIterations(model) if any(isinstance(m, DEQ) for m in model.modules()) else None

    def step() -> StepMetrics | None:
        optimizer.zero_grad(set_to_none=True)
        loss_fn().backward()
        optimizer.step()
        return {"deq_iters": counter.pop_mean()} if counter else None

    return Bench(step, count_params(model), dict(fields or {}))


class DEQIterations:
    """Counts forward-solve iterations (cell evaluations) of every DEQ layer inside a model."""

    def __init__(self, model: nn.Module) -> None:
        self.calls: list[int] = []
        self.deqs = [m for m in model.modules() if isinstance(m, DEQ)]
        if not self.deqs:
            raise ValueError(f"{type(model).__name__} contains no DEQ layer to count iterations of")
        for deq in self.deqs:
            deq.register_forward_hook(self._record)

    def _record(self, module: DEQ, args: tuple, output: torch.Tensor) -> None:
        self.calls.append(module.stats.n_iter)

    def pop_mean(self) -> float:
        """Mean iterations per DEQ forward since the last call; clears the record."""
        if not self.calls:
            raise RuntimeError("no DEQ forward ran since the last pop_mean()")
        mean = statistics.fmean(self.calls)
        self.calls.clear()
        return mean


def deq_contraction(deq: DEQ, u: torch.Tensor, samples: int) -> float:
    """Worst ||∂f/∂z|| at z* over the first `samples` rows of the injection u (no warm state kept)."""
    u = u[:samples].detach()
    with torch.no_grad():
        z = deq(u)
    deq.reset_warm_start()
    return contraction_factor(deq.cell, z, u).max().item()


def device_name(device: torch.device) -> str:
    """The GPU's name, or the CPU model from /proc/cpuinfo followed by "(cpu)"."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    model = platform.processor() or platform.machine()
    if os.path.exists("/proc/cpuinfo"):
        with open("/proc/cpuinfo") as info:
            for line in info:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    return f"{model} (cpu)"


def resolve_device(name: str) -> torch.device:
    """torch.device for "cpu" or "cuda"; cuda must be available."""
    if name not in ("cpu", "cuda"):
        raise ValueError(f"unknown device {name!r}; valid: ['cpu', 'cuda']")
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("--device=cuda was asked for but torch.cuda.is_available() is False")
    return torch.device(name)
