"""benchmarks.phantom_accuracy: its error measures, its exact reference, and a tiny run end to end."""
import json
import math

import pytest
import torch

from benchmarks.phantom_accuracy import (
    Settings,
    analyse,
    build_run,
    cosine_distance,
    main,
    relative_error,
    run_overrides,
)
from deq_plugin import DEQ
from score_matching.batching import batch_indices

TINY = Settings(steps=2, every=1, n_inducing=8)


@pytest.fixture
def one_thread():
    """One torch thread for the test (the analysis's many small autograd passes stall on a second
    thread of busy shared cores; `main` also sets one), restored afterwards."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_cosine_distance_and_relative_error_match_closed_forms():
    a = torch.tensor([[1.0, 0.0], [3.0, 4.0]], dtype=torch.float64)
    b = torch.tensor([[1.0, 1.0], [6.0, 8.0]], dtype=torch.float64)
    assert torch.allclose(cosine_distance(a, b), torch.tensor([1 - 1 / math.sqrt(2), 0.0], dtype=torch.float64))
    assert torch.allclose(relative_error(b, a), torch.tensor([1.0, 1.0], dtype=torch.float64))
    # 1 − cos of two vectors 1e-5 rad apart is 5e-11: the half squared distance of the unit vectors keeps it
    tiny = torch.tensor([[1.0, 0.0]], dtype=torch.float64), torch.tensor([[math.cos(1e-5), math.sin(1e-5)]], dtype=torch.float64)
    assert cosine_distance(*tiny).item() == pytest.approx(0.5e-10, rel=1e-6)


def test_bad_loss_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown loss 'dsm'; valid"):
        run_overrides("dsm", TINY, "cpu")


def test_many_phantom_steps_converge_to_the_exact_reference(uci_root, one_thread):
    # Phantom steps from z* converge to implicit differentiation at the rate ‖∂f/∂z‖ (≈ 0.14 here,
    # < 0.5 by the Frobenius λ=2), so after 6 steps little more than float32 rounding separates
    # phantom from the float64 implicit reference.
    config, task = build_run(run_overrides("ssm", TINY, "cpu"), torch.device("cpu"), str(uci_root))
    x = task.get_batch(batch_indices(task.n_train, config.training.batch_size, 0, config.seed), 0)
    two = analyse(task.model, x, config, 0, TINY)
    for deq in task.model.modules():
        if isinstance(deq, DEQ):
            deq.phantom_steps = 6
    converged = analyse(task.model, x, config, 0, TINY)
    assert max(converged["score_rel_error"]) < 1e-5 and converged["grad_rel_error"] < 1e-5
    assert min(two["score_rel_error"]) > 10 * max(converged["score_rel_error"])
    assert 0 < max(two["contraction_factor"]) < 0.5
    assert two["loss"] == pytest.approx(two["exact_loss"], rel=5e-3)  # K=2 at a contraction < 0.5


def test_a_tiny_run_writes_its_files_and_the_analysis_leaves_training_alone(tmp_path, uci_root, one_thread):
    every_step, every_other = tmp_path / "a", tmp_path / "b"
    common = ["--steps=2", "--n-inducing=8", "--losses=ssm", f"--data-root={uci_root}"]
    main([*common, "--every=1", f"--out-dir={every_step}"])
    main([*common, "--every=2", f"--out-dir={every_other}"])
    result = json.loads((every_step / "phantom-accuracy-cpu.json").read_text())
    run = result["runs"][0]
    assert result["device"].endswith("(cpu)") and run["loss"] == "ssm"
    assert [p["step"] for p in run["points"]] == [0, 1, 2] and run["summary"]["score_rows"] == 3 * 32
    assert all(len(p["contraction_factor"]) == 3 for p in run["points"])  # one DEQ per kernel
    assert (every_step / "phantom-accuracy-cpu.md").exists() and (every_step / "phantom-accuracy-cpu.png").stat().st_size > 0
    # Analysing at step 1 too must not change the training trajectory: the same loss at step 2.
    other = json.loads((every_other / "phantom-accuracy-cpu.json").read_text())["runs"][0]
    assert [p["step"] for p in other["points"]] == [0, 2]
    assert other["points"][-1]["loss"] == run["points"][-1]["loss"]
