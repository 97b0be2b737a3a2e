"""The benchmark harness: CPU memory probe, result files and ratios, and one real run end to end."""
import json
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import torch

from benchmarks.harness import Bench, measure
from benchmarks.memory import MIB, cpu_peak_bytes, retained_bytes
from benchmarks.paper_solver import picard_abs_batch
from benchmarks.report import RESULT_KEYS, VARIANT_KEYS, build_result, compute_ratios, markdown, write_result
from benchmarks.run import parse_sets, run_order, select
from benchmarks.suites import Variant, get_suite
from benchmarks.worker import suite_sizes

ROOT = Path(__file__).resolve().parents[1]


def _within(measured: int, expected: int, tolerance: float = 0.1) -> bool:
    return abs(measured - expected) <= tolerance * expected


def test_cpu_probe_measures_a_tensor_held_across_the_step():
    held = []
    peak = cpu_peak_bytes(lambda: held.append(torch.empty(64 * MIB, dtype=torch.uint8)))
    assert _within(peak, 64 * MIB), peak / MIB


def test_cpu_probe_measures_a_transient_peak():
    held = []

    def step():
        transient = torch.ones(32 * MIB, dtype=torch.uint8)
        held.append(transient[: 8 * MIB].clone())
        del transient

    assert _within(cpu_peak_bytes(step), 32 * MIB + 8 * MIB)


def test_cpu_probe_counts_frees_of_tensors_left_by_the_previous_step():
    # Each step frees the previous step's tensor, then allocates one of the same size: no growth.
    slot = [None]

    def step():
        slot[0] = None
        slot[0] = torch.empty(32 * MIB, dtype=torch.uint8)

    assert cpu_peak_bytes(step) < 0.1 * 32 * MIB


def test_retained_bytes_counts_what_a_call_keeps_but_not_its_transients():
    def fn():
        transient = torch.ones(32 * MIB, dtype=torch.uint8)
        kept = transient[: 16 * MIB].clone()
        del transient
        return kept

    kept, nbytes = retained_bytes(fn, torch.device("cpu"))
    assert kept.numel() == 16 * MIB and _within(nbytes, 16 * MIB)


def test_measure_reports_median_time_memory_and_mean_step_metrics():
    counter = iter(range(100))
    bench = Bench(lambda: {"iters": float(next(counter))}, params=7, fields={"note": "x"})
    result = measure(bench, torch.device("cpu"), warmup=1, steps=3)
    assert result["params"] == 7 and result["note"] == "x"
    assert result["iters"] == 4.0  # warm-up 0, probe 1-2, timed 3, 4, 5
    assert result["step_ms"] >= 0 and result["peak_memory_mib"] >= 0


def _variant(model, name, memory, ms):
    return {"name": name, "model": model, "params": 10, "peak_memory_mib": memory, "step_ms": ms}


def test_ratios_are_per_family_to_the_reference():
    variants = [_variant("a", "ref", 10.0, 4.0), _variant("a", "x", 20.0, 2.0),
                _variant("b", "ref", 5.0, 1.0), _variant("b", "x", 5.0, 3.0)]
    ratios = compute_ratios(variants, "ref")
    assert ratios["a/x"] == {"peak_memory": 2.0, "step_time": 0.5}
    assert ratios["b/x"] == {"peak_memory": 1.0, "step_time": 3.0}
    assert ratios["a/ref"] == {"peak_memory": 1.0, "step_time": 1.0}
    single = compute_ratios(variants[:2], "ref")
    assert single["x"] == {"peak_memory": 2.0, "step_time": 0.5}


def test_ncsn_goals_compare_the_deq_with_the_baseline_and_with_its_twin_by_the_papers_ratios():
    def ncsn(name, peak, resident, graph, ms):
        return {**_variant("ncsn-cifar10", name, peak, ms), "resident_mib": resident, "score_graph_mib": graph}

    variants = [ncsn("ssm-vr-ncsn", 900.0, 100.0, 400.0, 10.0), ncsn("twores", 300.0, 60.0, 100.0, 4.0),
                ncsn("deq", 340.0, 60.0, 130.0, 5.0)]
    result = build_result("ncsn", "cpu", "2.x", "ssm-vr-ncsn", variants)
    goals = {t.what: t for t in get_suite("ncsn").targets(result)}
    assert result["variants"][2]["total_peak_mib"] == 400.0  # resident + step peak
    assert goals["deq / ssm-vr-ncsn: total peak memory"].value == pytest.approx(0.4)
    assert goals["deq / ssm-vr-ncsn: memory held for the score's graph"].value == pytest.approx(0.325)
    twin = {what.split(":")[1].split(" (")[0].strip(): t for what, t in goals.items() if what.startswith("deq / twores")}
    # table 5: DEQ 20.1 GB, 2104 MiB, 481 ms against TwoRes 18.5 GB, 1701 MiB, 391 ms
    total, graph, time = twin["total peak memory"], twin["memory held for the score's graph"], twin["time per iteration"]
    assert total.value == pytest.approx(400 / 360) and total.limit == pytest.approx(1.0865, abs=1e-4) and not total.met
    assert graph.value == pytest.approx(1.3) and graph.limit == pytest.approx(1.2369, abs=1e-4) and not graph.met
    assert time.value == pytest.approx(1.25) and time.limit == pytest.approx(1.2302, abs=1e-4) and not time.met


def test_vae_goals_count_the_deqs_extra_memory_in_aug8_layers():
    def vae(name, total):
        return {**_variant("ssm-vae-celeba", name, total - 20.0, 1.0), "resident_mib": 20.0}

    variants = [vae("baseline", 100.0), vae("aug8", 500.0), vae("aug16", 900.0), vae("deq", 260.0)]
    goals = {t.what.split(" (")[0]: t for t in get_suite("vae").targets(build_result("vae", "cpu", "2.x", "baseline", variants))}
    layers = goals["deq − baseline total peak, in Aug(8) layers"]
    assert layers.value == pytest.approx(160 / 50)  # Aug(8) adds 400 MiB over 8 layers
    assert layers.limit == pytest.approx(1.4 / (3.3 / 8)) and layers.met  # table 1: 5.4, 4.0 and 7.3 GB
    assert goals["deq / baseline: total peak memory"].value == pytest.approx(2.6)
    no_aug8 = build_result("vae", "cpu", "2.x", "baseline", [variants[0], variants[3]])
    assert {t.what.split(" (")[0]: t for t in get_suite("vae").targets(no_aug8)}[layers.what.split(" (")[0]].value is None


def test_a_failed_variant_gets_null_ratios_and_a_missing_reference_is_an_error():
    failed = {**_variant("a", "x", None, None), "error": "CUDA out of memory"}
    assert compute_ratios([_variant("a", "ref", 1.0, 1.0), failed], "ref")["x"] == {"peak_memory": None, "step_time": None}
    with pytest.raises(ValueError, match="reference variant 'ref' is missing"):
        compute_ratios([_variant("a", "x", 1.0, 1.0)], "ref")


def test_result_files_have_the_required_shape(tmp_path):
    variants = [_variant("a", "ref", 10.0, 4.0), {**_variant("a", "deq", 5.0, 8.0), "deq_iters": 6.0}]
    result = build_result("fake", "Some CPU (cpu)", "2.x", "ref", variants, sizes={"batch": 2}, quick=True)
    json_path, md_path = write_result(result, tmp_path / "fake-cpu")
    loaded = json.loads(json_path.read_text())
    assert all(key in loaded for key in RESULT_KEYS)
    assert all(key in v for v in loaded["variants"] for key in VARIANT_KEYS)
    assert loaded["ratios"]["deq"] == {"peak_memory": 0.5, "step_time": 2.0}
    table = md_path.read_text()
    assert "| a | deq | 10 | 5 | 8 | 0.5 | 2 | 6 |" in table and table == markdown(loaded)
    with pytest.raises(ValueError, match="lacks the keys"):
        build_result("fake", "cpu", "2.x", "ref", [{"name": "ref", "model": "a"}])


def test_variants_run_family_by_family_with_each_reference_first():
    variants = [Variant("a", "x"), Variant("b", "y"), Variant("a", "ref"), Variant("b", "ref"), Variant("a", "z")]
    assert [v.key for v in run_order(variants, "ref")] == ["a/ref", "a/x", "a/z", "b/ref", "b/y"]
    losses = [v.key for v in run_order(list(get_suite("losses").variants), "loop")]
    assert losses[:6] == ["mlp-energy-d100/loop", "mlp-energy-d100/batched", "mlp-energy-d100/forward",
                          "trace-d100/loop", "trace-d100/batched", "trace-d100/forward"]


def test_bad_names_are_clear_errors():
    with pytest.raises(ValueError, match="unknown suite 'nope'; valid"):
        get_suite("nope")
    with pytest.raises(ValueError, match="unknown size keys \\['bogus'\\]"):
        suite_sizes("solver", True, {"bogus": 1})
    with pytest.raises(ValueError, match="unknown variants \\['nope'\\]"):
        select(get_suite("solver"), "nope")
    with pytest.raises(ValueError, match="KEY=VALUE"):
        parse_sets(["no-equals-sign"])
    assert parse_sets(["conv_batch=4", "conv_norm=spectral"]) == {"conv_batch": 4, "conv_norm": "spectral"}


def test_paper_solver_stops_on_the_whole_batch_step_norm():
    z0 = torch.zeros(3, 4, dtype=torch.float64)
    result = picard_abs_batch(lambda z: 0.5 * z + 1.0, z0, tol=1e-6, max_iter=100)
    assert result.converged and torch.allclose(result.z, torch.full_like(z0, 2.0), atol=1e-6)
    capped = picard_abs_batch(lambda z: 0.5 * z + 1.0, z0, tol=1e-6, max_iter=3)
    assert not capped.converged and capped.n_iter == 3


def test_a_tiny_suite_runs_end_to_end_in_fresh_processes(tmp_path):
    sizes = ["--set=batch=4", "--set=warmup=1", "--set=steps=1", "--set=reference_max_iter=200"]
    command = [sys.executable, "-m", "benchmarks.run", "--suite=grad", "--quick", "--only=phantom-2",
               f"--out-dir={tmp_path}", *sizes]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads((tmp_path / "grad-cpu.json").read_text())
    assert [v["name"] for v in result["variants"]] == ["phantom-2", "implicit"]
    assert result["device"].endswith("(cpu)") and result["sizes"]["batch"] == 4 and result["threads"] == 1
    # the run's UTC date, so that a reader can tell which results predate a change
    assert result["date"] in {(datetime.now(timezone.utc) - timedelta(days=d)).date().isoformat() for d in (0, 1)}
    assert f"measured {result['date']} (UTC)." in (tmp_path / "grad-cpu.md").read_text()
    phantom = result["variants"][0]
    assert phantom["peak_memory_mib"] > 0 and phantom["step_ms"] > 0 and phantom["deq_iters"] >= 1
    assert result["ratios"]["implicit"] == {"peak_memory": 1.0, "step_time": 1.0}
    assert (tmp_path / "grad-cpu.md").exists() and (tmp_path / "grad-cpu.png").stat().st_size > 0
