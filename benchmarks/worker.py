"""Runs one benchmark variant in this (fresh) process and writes its measurements as JSON.

    python -m benchmarks.worker --suite=depth --model=conv-score --variant=deq --device=cpu \
        --quick --out=/tmp/result.json [--sizes='{"steps": 2}'] [--threads=2]

`benchmarks.run` starts one such process per variant, so no variant's memory or caches can leak
into the next. The output is {"device": name, "threads": n, "result": the variant's entry}.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import torch

from benchmarks.harness import device_name, measure, resolve_device
from benchmarks.suites import get_suite


def suite_sizes(suite_name: str, quick: bool, overrides: dict[str, Any]) -> dict[str, Any]:
    """The suite's sizes with `overrides` applied; an unknown key is an error listing the valid ones."""
    sizes = get_suite(suite_name).sizes(quick)
    unknown = sorted(set(overrides) - set(sizes))
    if unknown:
        raise ValueError(f"unknown size keys {unknown} for suite {suite_name!r}; valid: {sorted(sizes)}")
    return {**sizes, **overrides}


def run_variant(suite_name: str, model: str, name: str, device: torch.device, sizes: dict[str, Any]) -> dict[str, Any]:
    """Builds and measures one variant; returns its result entry (name, model, measurements, fields)."""
    suite = get_suite(suite_name)
    variant = suite.variant(model, name)
    bench = suite.build(variant, sizes, device)
    return {"name": name, "model": model, **measure(bench, device, sizes["warmup"], sizes["steps"])}


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--suite", required=True)
    parser.add_argument("--model", required=True, help="the variant's model family")
    parser.add_argument("--variant", required=True, help="the variant's name within its family")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--sizes", default="{}", help="JSON object overriding the suite's sizes")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--out", required=True, type=Path)
    args = parser.parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    sizes = suite_sizes(args.suite, args.quick, json.loads(args.sizes))
    result = run_variant(args.suite, args.model, args.variant, device, sizes)
    # The device is named here, so that the parent process never initialises CUDA.
    report = {"device": device_name(device), "threads": torch.get_num_threads(), "result": result}
    args.out.write_text(json.dumps(report))


if __name__ == "__main__":
    main()
