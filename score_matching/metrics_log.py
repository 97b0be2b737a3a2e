"""Training metrics: TensorBoard scalars, WORKDIR/metrics.jsonl, a training progress line, and
`PhaseProgress`, the throttled progress-with-ETA lines of every other long phase."""
from __future__ import annotations

import json
import logging
import os
import pathlib
import time
from typing import Callable, Mapping

import numpy as np

from score_matching.checkpoint import write_atomically

logger = logging.getLogger("score_matching")


METRICS_FILE = "metrics.jsonl"


def read_metrics(path: str | os.PathLike) -> list[dict]:
    """The records of a metrics.jsonl file; a line that is not one JSON object (a write cut short
    by a kill) is dropped with a warning naming the file and line."""
    path = pathlib.Path(path)
    records = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            record = None
        if not isinstance(record, dict) or not isinstance(record.get("step"), int):
            logger.warning("%s line %d is not a complete metrics record (a write cut short?); dropped: %.80r",
                           path, number, line)
            continue
        records.append(record)
    return records


def cut_metrics_back(workdir: str | os.PathLike, step: int) -> None:
    """Keeps only the records of WORKDIR/metrics.jsonl at or before `step` (and drops torn lines),
    so that a run resumed from `step` does not log the steps after it twice. Rewritten atomically."""
    path = pathlib.Path(workdir) / METRICS_FILE
    if not path.exists():
        return
    records = read_metrics(path)
    kept = [r for r in records if r["step"] <= step]
    if len(kept) < len(records):
        logger.info("%s: dropped %d records after the resumed step %d", path, len(records) - len(kept), step)
    write_atomically(path, lambda f: f.write("".join(json.dumps(r) + "\n" for r in kept).encode()))


class MetricsWriter:
    """Writes the same scalars to TensorBoard and as one JSON object per logged step."""

    def __init__(self, workdir: str | pathlib.Path, enabled: bool = True) -> None:
        self.enabled = enabled
        self.path = pathlib.Path(workdir) / METRICS_FILE
        self._tb = None
        if enabled:
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(str(pathlib.Path(workdir) / "tensorboard"))

    def write(self, step: int, scalars: Mapping[str, float]) -> None:
        """Logs `scalars` at `step` (no-op on non-zero ranks)."""
        if not self.enabled:
            return
        for key, value in scalars.items():
            self._tb.add_scalar(key, value, step)
        with self.path.open("a") as f:
            f.write(json.dumps({"step": step, **{k: float(v) for k, v in scalars.items()}}) + "\n")
        self._tb.flush()

    def close(self) -> None:
        """Flushes and closes TensorBoard."""
        if self._tb is not None:
            self._tb.close()


class Progress:
    """Throughput and ETA over the steps since the last report."""

    def __init__(self, start_step: int, total_steps: int, examples_per_step: int) -> None:
        self.total, self.examples = total_steps, examples_per_step
        self._step, self._time = start_step, time.perf_counter()

    def line(self, step: int, loss: float) -> str:
        """A one-line summary: step, loss, examples/s, seconds per step and ETA."""
        now = time.perf_counter()
        steps = max(step - self._step, 1)
        per_step = (now - self._time) / steps
        self._step, self._time = step, now
        eta = per_step * max(self.total - step, 0)
        return (
            f"step {step}/{self.total} loss {loss:.5g} | {self.examples / per_step:.1f} ex/s, "
            f"{per_step * 1e3:.1f} ms/step, ETA {time.strftime('%H:%M:%S', time.gmtime(eta))}"
        )


# A long phase reports at most this often, so that a user sees a line at least every 30 s.
REPORT_INTERVAL_S = 10.0


def format_duration(seconds: float) -> str:
    """Seconds as H:MM:SS."""
    seconds = max(int(round(seconds)), 0)
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


class PhaseProgress:
    """Progress of one long phase (sampling, feature extraction, ...) in `total` units of work.

    `update(done)` logs 'phase: done/total unit (pct), elapsed, ETA' when `interval_s` seconds have
    passed since the last line (or since the start), and a closing line when the last unit is done
    if the phase took that long; short phases stay silent. `interval_s` defaults to REPORT_INTERVAL_S,
    `clock` to time.monotonic, `emit` to the "score_matching" logger (tests pass a fake clock); the
    ETA assumes the rate since the start.
    """

    def __init__(
        self,
        phase: str,
        total: int,
        unit: str = "steps",
        interval_s: float | None = None,
        clock: Callable[[], float] | None = None,
        emit: Callable[[str], None] | None = None,
    ) -> None:
        if total < 1:
            raise ValueError(f"total must be >= 1, got {total!r}")
        self.phase, self.total, self.unit = phase, total, unit
        self.interval_s = REPORT_INTERVAL_S if interval_s is None else interval_s
        self._clock, self._emit = clock or time.monotonic, emit or logger.info
        self._start = self._last = self._clock()

    def line(self, done: int, detail: str = "") -> str:
        """'phase: done/total unit (pct) | detail | elapsed H:MM:SS, ETA H:MM:SS'."""
        elapsed = self._clock() - self._start
        eta = elapsed / done * (self.total - done) if done > 0 else float("nan")
        parts = [f"{self.phase}: {done}/{self.total} {self.unit} ({100 * done / self.total:.0f}%)"]
        if detail:
            parts.append(detail)
        eta_text = format_duration(eta) if done > 0 else "unknown"
        parts.append(f"elapsed {format_duration(elapsed)}, ETA {eta_text}")
        return " | ".join(parts)

    def update(self, done: int, detail: str = "") -> bool:
        """Logs a line if one is due (see the class docstring); returns whether it did."""
        now = self._clock()
        finished = done >= self.total
        if now - self._last < self.interval_s and not (finished and now - self._start >= self.interval_s):
            return False
        self._last = now
        self._emit(self.line(done, detail))
        return True

    def reported(self) -> None:
        """Tells the throttle that the caller has just logged its own progress line."""
        self._last = self._clock()


def training_summary(workdir: str | pathlib.Path, up_to_step: int | None = None) -> dict[str, float]:
    """What eval.json reports of training, from WORKDIR/metrics.jsonl's logged training steps (those at
    or before `up_to_step` when given: the evaluated checkpoint's, when the run trained on after it).

    train_time_per_step_ms: median over the logged medians; train_peak_memory_mib: the largest
    logged peak (CUDA tensors on GPU, the process's peak RSS on CPU); train_steps_logged: the last
    logged step; and the mean of each per-DEQ-layer solver statistic ('deq/...'), the last value of a
    running total ('deq/..._total'). Empty when the
    file is missing (a checkpoint trained elsewhere).
    """
    path = pathlib.Path(workdir) / METRICS_FILE
    if not path.exists():
        return {}
    records = [r for r in read_metrics(path)
               if "time_per_step_ms" in r and (up_to_step is None or r["step"] <= up_to_step)]
    if not records:
        return {}
    summary = {
        "train_time_per_step_ms": float(np.median([r["time_per_step_ms"] for r in records])),
        "train_peak_memory_mib": max(r["peak_memory_mib"] for r in records),
        "train_steps_logged": records[-1]["step"],
    }
    for key in sorted({k for r in records for k in r if k.startswith("deq/")}):
        values = [r[key] for r in records if key in r]
        summary[f"train_{key}"] = float(values[-1] if key.endswith("_total") else np.mean(values))
    return summary
