"""Peak memory of one step above the memory already allocated when it starts.

- CUDA: `torch.cuda.max_memory_allocated` after `reset_peak_memory_stats`, minus
  `memory_allocated` before the step (the caching allocator's own counters).
- CPU: torch has no CPU counterpart of those counters, so the step runs under
  `torch.profiler.profile(profile_memory=True)`. The profiler reports every allocation and free of
  the c10 CPU allocator (which backs every CPU tensor) as a signed "[memory]" event; the running
  sum of those events in time order is the tensor memory allocated since the step began, and its
  maximum is the peak. This is exact, deterministic and independent of what ran before in the
  process, unlike RSS: `ru_maxrss` never decreases, so after a warm-up it hides the step's peak,
  and glibc keeps freed pages, so RSS deltas undercount reuse. The profiler only knows the size
  of blocks it saw allocated, so the step runs once unmeasured under the same profiler first (see
  `cpu_peak_bytes`). Not counted: memory that is not a tensor storage (Python objects, scratch
  buffers a library takes from malloc) and allocations by threads the profiler does not follow
  (e.g. a Python thread started inside the step). Autograd's CPU backward runs on the calling
  thread, so a training step is covered.
Both devices measure the second of two consecutive steps, so they see the same state.
`retained_bytes` measures, with the same counters, what one call leaves allocated (e.g. the output
and the tensors autograd saved to differentiate it).
"""
from __future__ import annotations

from typing import Callable, TypeVar

import torch
from torch.autograd import DeviceType
from torch.profiler import ProfilerActivity, profile, record_function

MIB = 2**20
_PROBE = "benchmarks.memory.probe"
T = TypeVar("T")


def cpu_peak_bytes(step: Callable[[], object]) -> int:
    """Peak CPU tensor memory allocated during step() above what was allocated before, in bytes.

    step() runs twice under the profiler and only the second run is measured: the profiler learns
    the size of a block only if it saw it allocated, so the first run makes it account for the
    tensors one step leaves to the next and frees there (e.g. gradients set to None by zero_grad).
    """
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        step()
        with record_function(_PROBE):
            step()
    live = peak = 0
    for nbytes in _probed_allocations(prof):
        live += nbytes
        peak = max(peak, live)
    return peak


def _probed_allocations(prof: profile) -> list[int]:
    """The signed sizes of the CPU allocations and frees inside the `_PROBE` region, in time order."""
    events = prof.profiler.kineto_results.events()
    probe = next(e for e in events if e.name() == _PROBE)
    memory = sorted(  # a stable sort: events at the same time keep their recorded order
        (e for e in events if e.name() == "[memory]" and e.device_type() == DeviceType.CPU), key=lambda e: e.start_ns()
    )
    return [e.nbytes() for e in memory if probe.start_ns() <= e.start_ns() <= probe.end_ns()]


def cuda_peak_bytes(step: Callable[[], object], device: torch.device) -> int:
    """Peak CUDA memory allocated during step() above what was allocated before, in bytes.

    step() runs twice, like `cpu_peak_bytes`, and the second run is measured.
    """
    step()
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    before = torch.cuda.memory_allocated(device)
    step()
    torch.cuda.synchronize(device)
    return torch.cuda.max_memory_allocated(device) - before


def peak_bytes(step: Callable[[], object], device: torch.device) -> int:
    """Peak memory of the second of two step() runs above its starting point on `device`."""
    if device.type == "cuda":
        return cuda_peak_bytes(step, device)
    if device.type == "cpu":
        return cpu_peak_bytes(step)
    raise ValueError(f"unsupported device {device.type!r}; valid: ['cpu', 'cuda']")


def adam_resident_bytes(model: torch.nn.Module, batch: torch.Tensor) -> int:
    """What an Adam training step finds allocated when it begins: the trainable parameters, their
    gradients from the previous step and Adam's two moments (4 × parameter bytes), plus the batch."""
    param_bytes = sum(p.numel() * p.element_size() for p in model.parameters() if p.requires_grad)
    return 4 * param_bytes + batch.numel() * batch.element_size()


def retained_bytes(fn: Callable[[], T], device: torch.device) -> tuple[T, int]:
    """(fn(), the memory fn allocated that is still allocated when it returns), in bytes.

    With fn's output kept alive, this is the output plus everything it keeps reachable, e.g. the
    tensors autograd saved to differentiate it. CUDA: `memory_allocated` after minus before; CPU:
    the net sum of the profiler's allocation events during fn (see `cpu_peak_bytes`).
    """
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        before = torch.cuda.memory_allocated(device)
        out = fn()
        torch.cuda.synchronize(device)
        return out, torch.cuda.memory_allocated(device) - before
    if device.type == "cpu":
        with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
            with record_function(_PROBE):
                out = fn()
        return out, sum(_probed_allocations(prof))
    raise ValueError(f"unsupported device {device.type!r}; valid: ['cpu', 'cuda']")
