"""Runs a benchmark suite, one fresh process per variant, and writes its JSON, markdown and PNG.

    python -m benchmarks.run --suite=depth [--device=cpu|cuda] [--quick] [--repeats=1]
        [--threads=N] [--set KEY=JSON ...] [--only KEY,...] [--timeout=S] [--budget=S]
        [--out-dir=benchmarks/results]

Writes <out-dir>/<suite>-<device>.{json,md,png}. `--set` overrides one size (its value parsed as
JSON, e.g. --set conv_batch=4); `--only` keeps the listed variants ("model/name", or a name to
keep it in every family) plus each family's reference. With `--repeats=R` every variant runs R
times, round robin, and its step_ms is the median of the R runs (the list is kept as
step_ms_repeats). Variants run family by family, in the order the suite lists its families, each
family's reference first (`run_order`), so under a budget the first families are complete. A
variant whose process fails (e.g. out of memory), runs past `--timeout` seconds, or is not started
because `--budget` seconds (for the whole suite) are used up, is kept with null measurements and
the reason; the files are written in every case.
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from benchmarks.report import build_result, write_result
from benchmarks.suites import SUITE_NAMES, Suite, Variant, get_suite
from benchmarks.worker import suite_sizes

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
# One thread per CPU worker: on shared cores a second OpenMP thread that gets descheduled stalls
# every parallel region, which made 2-thread step times erratic (6x slower, 10x the spread).
CPU_THREADS = 1


def parse_sets(items: list[str]) -> dict[str, Any]:
    """["key=json", ...] -> {key: value}; a value that is not JSON is taken as a string."""
    overrides: dict[str, Any] = {}
    for item in items:
        key, eq, text = item.partition("=")
        if not eq or not key:
            raise ValueError(f"--set expects KEY=VALUE, got {item!r}")
        try:
            overrides[key] = json.loads(text)
        except json.JSONDecodeError:
            overrides[key] = text
    return overrides


def select(suite: Suite, only: str | None) -> list[Variant]:
    """The suite's variants kept by --only (plus the references); all of them without it."""
    if not only:
        return list(suite.variants)
    wanted = {w.strip() for w in only.split(",") if w.strip()}
    known = {v.key for v in suite.variants} | {v.name for v in suite.variants}
    unknown = sorted(wanted - known)
    if unknown:
        raise ValueError(f"--only names unknown variants {unknown}; valid: {sorted(known)}")
    return [v for v in suite.variants if v.key in wanted or v.name in wanted or v.name == suite.reference]


def run_order(variants: list[Variant], reference: str) -> list[Variant]:
    """The variants family by family, families in order of first appearance, each family's
    `reference` first and the rest in the given order."""
    families: dict[str, list[Variant]] = {}
    for variant in variants:
        families.setdefault(variant.model, []).append(variant)
    return [v for members in families.values() for v in sorted(members, key=lambda v: v.name != reference)]


def run_worker(
    suite: str, variant: Variant, device: str, sizes: dict[str, Any], threads: int | None, timeout: float
) -> dict[str, Any]:
    """Runs `benchmarks.worker` for one variant in a fresh process with the full `sizes`; returns
    its report or an error."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "result.json"
        command = [
            sys.executable, "-m", "benchmarks.worker", f"--suite={suite}", f"--model={variant.model}",
            f"--variant={variant.name}", f"--device={device}", f"--sizes={json.dumps(sizes)}", f"--out={out}",
        ]
        command += [f"--threads={threads}"] if threads is not None else []
        try:
            done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            return {"error": f"timed out after {timeout:.0f} s"}
        if done.returncode != 0 or not out.exists():
            lines = [line for line in done.stderr.splitlines() if line.strip()]
            return {"error": lines[-1] if lines else f"worker exited with status {done.returncode}"}
        return json.loads(out.read_text())


def aggregate(variant: Variant, reports: list[dict[str, Any]]) -> dict[str, Any]:
    """One variant's entry from its repeated runs: the first run's fields, median step_ms."""
    runs = [r["result"] for r in reports if "result" in r]
    if not runs:
        error = next(r["error"] for r in reports)
        return {"name": variant.name, "model": variant.model, "params": None, "peak_memory_mib": None,
                "step_ms": None, "error": error}
    entry = dict(runs[0])
    if len(runs) > 1:
        entry["step_ms_repeats"] = [r["step_ms"] for r in runs]
        entry["step_ms"] = statistics.median(entry["step_ms_repeats"])
    return entry


def _progress(variant: Variant, report: dict[str, Any]) -> str:
    if "error" in report:
        return f"{variant.key}: FAILED: {report['error']}"
    r = report["result"]
    return f"{variant.key}: {r['peak_memory_mib']:.2f} MiB, {r['step_ms']:.2f} ms"


def run_suite(
    suite_name: str,
    device: str = "cpu",
    quick: bool = False,
    overrides: dict[str, Any] | None = None,
    only: str | None = None,
    repeats: int = 1,
    threads: int | None = None,
    timeout: float = 3600.0,
    budget: float | None = None,
) -> dict[str, Any]:
    """Runs every selected variant of the suite in its own process; returns the result dict."""
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    if not timeout > 0 or (budget is not None and not budget > 0):
        raise ValueError(f"timeout and budget must be > 0 seconds, got timeout={timeout}, budget={budget}")
    if device not in ("cpu", "cuda"):
        raise ValueError(f"unknown device {device!r}; valid: ['cpu', 'cuda']")
    suite = get_suite(suite_name)
    sizes = suite_sizes(suite_name, quick, overrides or {})
    variants = select(suite, only)
    order = run_order(variants, suite.reference)
    deadline = time.monotonic() + (budget if budget is not None else float("inf"))
    reports: dict[Variant, list[dict[str, Any]]] = {v: [] for v in variants}
    for _ in range(repeats):
        for variant in order:
            left = deadline - time.monotonic()
            if left < 1:
                report = {"error": f"not run: the suite's budget of {budget:.0f} s was used up"}
            else:
                report = run_worker(suite_name, variant, device, sizes, threads, min(timeout, left))
            print(_progress(variant, report), flush=True)
            reports[variant].append(report)
    done = [r for runs in reports.values() for r in runs if "result" in r]
    if not done:
        raise RuntimeError(f"every variant of suite {suite_name!r} failed; first error: {next(iter(reports.values()))[0]['error']}")
    result = build_result(
        suite_name,
        done[0]["device"],
        torch.__version__,
        suite.reference,
        [aggregate(v, reports[v]) for v in variants],
        description=suite.description,
        step=suite.step,
        sizes=sizes,
        quick=quick,
        threads=done[0]["threads"],
        repeats=repeats,
        date=datetime.now(timezone.utc).date().isoformat(),
    )
    result["targets"] = [t.as_dict() for t in suite.targets(result)]
    return result


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--suite", required=True, choices=SUITE_NAMES)
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--quick", action="store_true", help="shrunk sizes for a CPU run of a few minutes")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override one size")
    parser.add_argument("--only", default=None, help="comma-separated variants to run (references are kept)")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument(
        "--threads", type=int, default=None,
        help=f"torch intra-op threads per worker (default: {CPU_THREADS} on cpu, torch's choice on cuda)",
    )
    parser.add_argument("--timeout", type=float, default=3600.0, help="seconds allowed per variant process")
    parser.add_argument("--budget", type=float, default=None, help="seconds allowed for the whole suite")
    parser.add_argument("--out-dir", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    threads = args.threads if args.threads is not None or args.device != "cpu" else CPU_THREADS
    result = run_suite(
        args.suite, args.device, args.quick, parse_sets(args.set), args.only, args.repeats, threads,
        args.timeout, args.budget,
    )
    stem = args.out_dir / f"{args.suite}-{args.device}"
    paths = write_result(result, stem)
    png = stem.with_suffix(".png")
    get_suite(args.suite).plot(result, png)
    for path in (*paths, png):
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
