"""Suite results: ratios to the reference variant, and the JSON and markdown files.

The JSON has the keys suite, device, torch, reference, variants (each with name, model, params,
peak_memory_mib, step_ms and extra fields) and ratios, plus `sizes`, `step` (what one step is),
`quick` and `threads`. `ratios` maps a variant to {"peak_memory": x, "step_time": y}, its value
divided by the reference variant's. A suite with several model families takes ratios per family,
to the variant named `reference` in the same family, and keys them "model/name"; a suite with one
family keys them by the variant name alone. A ratio is null where either value is missing (a
variant that failed) or the reference's value is zero.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

RESULT_KEYS = ("suite", "device", "torch", "reference", "variants", "ratios")
VARIANT_KEYS = ("name", "model", "params", "peak_memory_mib", "step_ms")
RATIO_FIELDS = {"peak_memory": "peak_memory_mib", "step_time": "step_ms"}


def ratio_key(variant: dict[str, Any], multi_family: bool) -> str:
    """The key of a variant in `ratios`: "model/name" when the suite has several families."""
    return f"{variant['model']}/{variant['name']}" if multi_family else variant["name"]


def _ratio(value: float | None, reference: float | None) -> float | None:
    if value is None or reference is None or reference == 0:
        return None
    return value / reference


def compute_ratios(variants: list[dict[str, Any]], reference: str) -> dict[str, dict[str, float | None]]:
    """Each variant's peak memory and step time divided by its family's reference variant's."""
    families = {v["model"] for v in variants}
    references = {v["model"]: v for v in variants if v["name"] == reference}
    missing = sorted(families - references.keys())
    if missing:
        raise ValueError(f"reference variant {reference!r} is missing from the families {missing}")
    ratios = {}
    for v in variants:
        ref = references[v["model"]]
        ratios[ratio_key(v, len(families) > 1)] = {
            ratio: _ratio(v.get(field), ref.get(field)) for ratio, field in RATIO_FIELDS.items()
        }
    return ratios


@dataclass(frozen=True)
class Target:
    """A project goal checked on a result: `value` must be <= `limit` (or >= it if not at_most)."""

    what: str
    value: float | None
    limit: float
    at_most: bool = True

    @property
    def met(self) -> bool | None:
        """Whether the goal is met; None when the value is missing."""
        if self.value is None:
            return None
        return self.value <= self.limit if self.at_most else self.value >= self.limit

    def as_dict(self) -> dict[str, Any]:
        """The JSON form: what, value, comparison ("<=" or ">="), limit, met."""
        return {"what": self.what, "value": self.value, "comparison": "<=" if self.at_most else ">=",
                "limit": self.limit, "met": self.met}


def ratio_of(result: dict[str, Any], model: str, name: str, reference: str, field: str) -> float | None:
    """`field` of variant `name` divided by that of `reference`, both of family `model`."""
    values = {v["name"]: v.get(field) for v in result["variants"] if v["model"] == model}
    return _ratio(values.get(name), values.get(reference))


def build_result(
    suite: str, device: str, torch_version: str, reference: str, variants: list[dict[str, Any]], **extra: Any
) -> dict[str, Any]:
    """The suite's result dict; every variant must carry the required keys."""
    for v in variants:
        absent = [k for k in VARIANT_KEYS if k not in v]
        if absent:
            raise ValueError(f"variant {v.get('name')!r} lacks the keys {absent}")
    return {
        "suite": suite,
        "device": device,
        "torch": torch_version,
        "reference": reference,
        "variants": variants,
        "ratios": compute_ratios(variants, reference),
        **extra,
    }


def format_value(value: Any) -> str:
    """A table cell: "—" for null, yes/no for booleans, floats to three significant digits (whole
    numbers from 1000 on, where three digits would print 1e+03)."""
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 1e3 else f"{value:.0f}"
    return str(value)


def goals_table(targets: list[dict[str, Any]]) -> list[str]:
    """Markdown rows of goals in `Target.as_dict()` form: goal, value, target, met (yes / no / —)."""
    lines = ["| goal | value | target | met |", "|---|---|---|---|"]
    for t in targets:
        target = f"{t['comparison']} {format_value(t['limit'])}"
        lines.append(f"| {t['what']} | {format_value(t['value'])} | {target} | {format_value(t['met'])} |")
    return lines


def variant_rows(result: dict[str, Any], fields: list[str]) -> list[str]:
    """Markdown rows, one per variant: model, variant, params, peak MiB, step ms, its two ratios to the
    reference, then the variant's values of `fields`."""
    multi = len({v["model"] for v in result["variants"]}) > 1
    lines = []
    for v in result["variants"]:
        ratio = result["ratios"][ratio_key(v, multi)]
        row = [v["model"], v["name"], v["params"], v["peak_memory_mib"], v["step_ms"],
               ratio["peak_memory"], ratio["step_time"], *(v.get(f) for f in fields)]
        lines.append("| " + " | ".join(format_value(c) for c in row) + " |")
    return lines


def markdown(result: dict[str, Any]) -> str:
    """A markdown table of the variants with their ratios, headed by the run's facts."""
    variants = result["variants"]
    multi = len({v["model"] for v in variants}) > 1
    extra = []
    for v in variants:
        extra += [k for k in v if k not in VARIANT_KEYS and k not in extra]
    header = ["model", "variant", "params", "peak MiB", "step ms", "memory ×ref", "time ×ref", *extra]
    lines = [
        f"# Benchmark `{result['suite']}` on {result['device']}",
        "",
        f"torch {result['torch']}; reference variant `{result['reference']}`"
        + (" (per model family)" if multi else "")
        + f"; quick: {format_value(result.get('quick'))}; threads: {format_value(result.get('threads'))}"
        + (f"; measured {result['date']} (UTC)." if result.get("date") else "."),
        "",
        f"One step: {result.get('step', '')}",
        "",
        f"Sizes: `{json.dumps(result.get('sizes', {}))}`",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
    ]
    lines += variant_rows(result, extra)
    if result.get("targets"):
        lines += ["", *goals_table(result["targets"])]
    errors = [v for v in variants if v.get("error")]
    if errors:
        lines += ["", "Failed variants:", ""] + [f"- {v['model']}/{v['name']}: {v['error']}" for v in errors]
    return "\n".join(lines) + "\n"


def write_result(result: dict[str, Any], stem: Path) -> tuple[Path, Path]:
    """Writes the result as `stem`.json and its table as `stem`.md; returns both paths."""
    stem.parent.mkdir(parents=True, exist_ok=True)
    json_path, md_path = stem.with_suffix(".json"), stem.with_suffix(".md")
    json_path.write_text(json.dumps(result, indent=2) + "\n")
    md_path.write_text(markdown(result))
    return json_path, md_path


def add_totals(result: dict[str, Any]) -> None:
    """Sets each variant's total_peak_mib = resident_mib + peak_memory_mib (None if either is missing)."""
    for v in result["variants"]:
        peak, resident = v.get("peak_memory_mib"), v.get("resident_mib")
        v["total_peak_mib"] = None if peak is None or resident is None else peak + resident
