"""Benchmark suites: each names its variants, its sizes, how to build a variant and how to plot.

A variant is identified by (model, name): `model` is its model family, `name` its variant within
the family. Ratios are taken to the variant called `Suite.reference` of the same family.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

from benchmarks.harness import Bench
from benchmarks.report import Target
from score_matching.registry import Registry

SUITE_NAMES = ("depth", "grad", "solver", "losses", "ncsn", "ncsn_sampling", "vae", "plugin")


@dataclass(frozen=True)
class Variant:
    """One benchmarked configuration: its model family and its name within the family."""

    model: str
    name: str

    @property
    def key(self) -> str:
        """The key "model/name", unique within a suite."""
        return f"{self.model}/{self.name}"


def no_targets(result: dict[str, Any]) -> list[Target]:
    """The goals of a suite that has none."""
    return []


@dataclass(frozen=True)
class Suite:
    """A suite: its variants, the reference variant's name, sizes, builder and plot.

    `sizes(quick)` returns the sizes used (recorded in the results); `build(variant, sizes, device)`
    returns the variant's `Bench` with inputs and parameters seeded by `sizes["seed"]`;
    `plot(result, path)` draws the suite's PNG from the written result dict; `targets(result)`
    checks the project's goals for the suite (none if the suite has no goals).
    """

    name: str
    description: str
    step: str
    reference: str
    variants: tuple[Variant, ...]
    sizes: Callable[[bool], dict[str, Any]]
    build: Callable[[Variant, dict[str, Any], torch.device], Bench]
    plot: Callable[[dict[str, Any], Path], None]
    targets: Callable[[dict[str, Any]], list[Target]] = no_targets

    def variant(self, model: str, name: str) -> Variant:
        """The variant (model, name); an unknown one is an error listing the valid keys."""
        for variant in self.variants:
            if (variant.model, variant.name) == (model, name):
                return variant
        valid = [v.key for v in self.variants]
        raise ValueError(f"suite {self.name!r} has no variant {model}/{name}; valid: {valid}")


SUITES: Registry[Suite] = Registry("suite", modules=tuple(f"benchmarks.suites.{name}" for name in SUITE_NAMES))


def register_suite(suite: Suite) -> Suite:
    """Registers `suite` under its name (each module `benchmarks.suites.<name>` registers its `SUITE`)."""
    return SUITES.register(suite.name)(suite)


def get_suite(name: str) -> Suite:
    """The suite called `name`; an unknown name is an error listing the valid ones."""
    return SUITES.get(name)
