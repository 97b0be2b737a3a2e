"""docs/benchmarks.md: current with the committed JSON, and made of their numbers only."""
import json
import re
from pathlib import Path

import pytest

from benchmarks.benchmarks_page import PAGE, RESULTS, TITLE, render_page
from benchmarks.report import format_value

NUMBER = re.compile(r"\d+(?:\.\d+)?(?:e[+-]?\d+)?")


def _leaves(data):
    if isinstance(data, dict):
        for key, value in data.items():
            yield key
            yield from _leaves(value)
    elif isinstance(data, list):
        for value in data:
            yield from _leaves(value)
    else:
        yield data


def _numbers_in_files(results: Path) -> set[str]:
    """Every number token of every JSON under `results`: its values formatted for a table, and the
    digits inside its strings and keys (names such as mlp-energy-d100)."""
    tokens = set()
    for path in results.rglob("*.json"):
        for leaf in _leaves(json.loads(path.read_text())):
            text = format_value(leaf) if isinstance(leaf, (int, float)) and not isinstance(leaf, bool) else str(leaf)
            tokens.update(NUMBER.findall(text))
            tokens.update(NUMBER.findall(repr(leaf)))
    return tokens


def test_page_is_regenerated_from_the_committed_results():
    # Stale numbers fail here: run `python -m benchmarks.benchmarks_page` after a benchmark.
    assert PAGE.read_text() == render_page(RESULTS)


def test_every_number_on_the_page_comes_from_a_result_file():
    body = PAGE.read_text().split("\n", 3)[3]  # after the title and the intro
    allowed = _numbers_in_files(RESULTS)
    stray = sorted({token for token in NUMBER.findall(body) if token not in allowed})
    assert not stray, f"numbers in docs/benchmarks.md found in no result file: {stray}"


def _suite(device, quick, met):
    variants = [
        {"name": "ref", "model": "toy", "params": 10, "peak_memory_mib": 4.0, "step_ms": 2.0},
        {"name": "fast", "model": "toy", "params": 10, "peak_memory_mib": 2.0, "step_ms": 0.5, "deq_iters": 7.0,
         "step_ms_spread": 0.25},
    ]
    return {
        "suite": "toy", "device": device, "torch": "2.x", "reference": "ref", "variants": variants,
        "ratios": {"ref": {"peak_memory": 1.0, "step_time": 1.0}, "fast": {"peak_memory": 0.5, "step_time": 0.25}},
        "targets": [{"what": "fast / ref time", "value": 0.25, "comparison": "<=", "limit": 0.5, "met": met}],
        "description": "a toy suite", "step": "one toy step", "quick": quick,
    }


def test_section_renders_every_suite_file_sorted_and_skips_other_json(tmp_path):
    (tmp_path / "b-cpu.json").write_text(json.dumps(_suite("Some CPU (cpu)", True, True)))
    (tmp_path / "b-cpu.png").write_bytes(b"png")
    (tmp_path / "nested").mkdir()
    (tmp_path / "nested" / "a-cuda.json").write_text(json.dumps({**_suite("NVIDIA H100", False, False), "date": "2026-12-04"}))
    (tmp_path / "log.json").write_text(json.dumps({"not": "a result"}))
    section = render_page(tmp_path)
    cpu = section.index("### `toy` on Some CPU (cpu): CPU, `--quick` sizes")
    # a result's date, where it has one, and its sub-folder of the results
    gpu = section.index("### `toy` on NVIDIA H100: GPU, 2026-12-04 — `nested/`\n")
    assert cpu < gpu  # sorted by path: b-cpu.json before nested/a-cuda.json
    # the variant row: family, name, params, MiB, ms, memory and time ratios, then deq_iters
    assert "| toy | fast | 10 | 2 | 0.5 | 0.5 | 0.25 | 7 |" in section
    assert "step_ms_spread" not in section and "not a result" not in section
    assert "| fast / ref time | 0.25 | <= 0.5 | yes |" in section[cpu:gpu]
    assert "| fast / ref time | 0.25 | <= 0.5 | no |" in section[gpu:]
    assert "[plot](" in section[cpu:gpu] and "[plot](" not in section[gpu:]  # only b-cpu has a PNG
    assert f"({tmp_path}" not in section  # links are relative to the page's folder, docs/


def test_an_empty_results_folder_says_so(tmp_path):
    page = render_page(tmp_path)
    assert page.startswith(TITLE + "\n") and page.endswith("No result files yet.\n")


def test_a_variant_paper_tables_report_is_titled_by_its_folder_and_shared_overrides(tmp_path):
    report = json.loads((RESULTS / "paper-tables.json").read_text())
    first = next(iter(report["rows"]))
    variant = {**report, "rows": {first: {**report["rows"][first], "budget": {"n_iters": 7, "data.gaussian": "standard"}}}}
    (tmp_path / "paper-tables.json").write_text(json.dumps(report))
    (tmp_path / "on-standard").mkdir()
    (tmp_path / "on-standard" / "report.json").write_text(json.dumps(variant))
    section = render_page(tmp_path)
    parts = section.split("### Paper tables")[1:]
    variant_part, main_part = parts  # sorted by path: on-standard/report.json first
    assert variant_part.startswith(" 2–4, ours against the paper: `on-standard` (")
    assert main_part.startswith(" 2–4, ours against the paper (")
    assert "Config overrides" not in main_part
    assert "Config overrides of every row: `data.gaussian=standard`." in variant_part
