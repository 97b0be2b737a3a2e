"""What a restart may trust: checkpoints load without running code, a workdir keeps its config,
an unreadable checkpoint is named and recovered from, and metrics.jsonl is cut back to the resume."""
import json
import logging
import pathlib
import subprocess
import sys

import pytest
import torch

from score_matching.checkpoint import UnreadableCheckpointError, load_checkpoint, save_checkpoint
from score_matching.metrics_log import read_metrics
from score_matching.workdir_config import ConfigMismatchError
from tiny_runs import _RUN, _TINY, tiny_config, train_losses

REPO = pathlib.Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.usefixtures("mnist_root")


class CodeOnLoad:
    """Pickles as a call to open(marker, 'w'): unpickling it creates the marker file."""

    def __init__(self, marker: pathlib.Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return open, (str(self.marker), "w")


def _write_malicious_checkpoint(path: pathlib.Path, marker: pathlib.Path) -> None:
    torch.save({"model": {}, "step": 1, "payload": CodeOnLoad(marker)}, path)


def test_the_malicious_checkpoint_of_these_tests_does_run_code_when_fully_unpickled(tmp_path):
    """The payload is real: torch's full unpickler creates the marker (so the tests below can fail)."""
    marker = tmp_path / "marker"
    _write_malicious_checkpoint(tmp_path / "evil.pth", marker)
    torch.load(tmp_path / "evil.pth", weights_only=False)
    assert marker.exists()


def test_loading_refuses_a_checkpoint_that_would_run_code(tmp_path):
    marker = tmp_path / "marker"
    path = tmp_path / "checkpoint-meta.pth"
    _write_malicious_checkpoint(path, marker)
    with pytest.raises(UnreadableCheckpointError, match=r"checkpoint-meta\.pth: it asks to import .*open.*refused"):
        load_checkpoint(path)
    assert not marker.exists()


def _main(workdir: pathlib.Path, *flags: str) -> subprocess.CompletedProcess:
    """main.py on the tiny NICE config (the same settings as tiny_config('nice_baseline', loss__name='mle'))."""
    overrides = {**_TINY["nice"], **_RUN, "loss.name": "mle"}
    args = ["--config=configs/nice_baseline.py", f"--workdir={workdir}", *(f"--config.{k}={v}" for k, v in overrides.items())]
    return subprocess.run([sys.executable, "main.py", *args, *flags], cwd=REPO, capture_output=True, text=True, timeout=300)


def test_eval_and_resume_refuse_a_malicious_checkpoint_without_running_it(tmp_path):
    train_losses(tiny_config("nice_baseline", loss__name="mle"), tmp_path)
    marker = tmp_path / "marker"
    _write_malicious_checkpoint(tmp_path / "checkpoint-meta.pth", marker)
    for mode in ("eval", "train"):
        result = _main(tmp_path, f"--mode={mode}")
        assert result.returncode != 0, mode
        assert "checkpoint-meta.pth" in result.stderr and "refused without running it" in result.stderr, result.stderr[-2000:]
        assert not marker.exists(), mode
    # Training offered the readable snapshot instead, and left the bad file where it was.
    assert "checkpoint_3.pth (step 3)" in result.stderr and "resume_from_snapshot" in result.stderr
    assert (tmp_path / "checkpoint-meta.pth").exists()


def _model_state(workdir: pathlib.Path, name: str = "checkpoint-meta.pth") -> dict:
    return load_checkpoint(workdir / name)["model"]


def _assert_same_weights(a: dict, b: dict) -> None:
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_an_unreadable_latest_checkpoint_is_named_and_the_newest_readable_snapshot_offered(tmp_path):
    config = lambda n, **o: tiny_config("nice_baseline", loss__name="mle", training__n_iters=n,  # noqa: E731
                                        training__snapshot_freq=2, **o)
    full = train_losses(config(6), tmp_path / "full")
    split = tmp_path / "split"
    train_losses(config(4), split)
    latest = split / "checkpoint-meta.pth"
    latest.write_bytes(b"\x80\x53 not a checkpoint")  # what a bad disk or copy leaves
    newest = split / "checkpoints" / "checkpoint_4.pth"
    newest.write_bytes(newest.read_bytes()[:100])  # truncated
    with pytest.raises(UnreadableCheckpointError) as error:
        train_losses(config(6), split)
    message = str(error.value)
    assert f"cannot load checkpoint {latest}: corrupt or truncated" in message
    assert f"newest readable snapshot is {split / 'checkpoints' / 'checkpoint_2.pth'} (step 2)" in message
    assert latest.read_bytes() == b"\x80\x53 not a checkpoint"  # not overwritten
    # Asked to, training resumes from the snapshot: the run ends as the uninterrupted one, and
    # metrics.jsonl holds each step once (the steps after the snapshot were cut back).
    resumed = train_losses(config(6, training__resume_from_snapshot=True), split)
    assert resumed == full
    _assert_same_weights(_model_state(split), _model_state(tmp_path / "full"))
    kept = list(split.glob("checkpoint-meta.pth.unreadable-*"))
    assert len(kept) == 1 and kept[0].read_bytes() == b"\x80\x53 not a checkpoint"


def test_a_resume_cuts_metrics_back_drops_a_torn_line_and_removes_stale_temporaries(tmp_path, caplog):
    config = lambda n: tiny_config("nice_baseline", loss__name="mle", training__n_iters=n)  # noqa: E731
    full = train_losses(config(4), tmp_path / "full")
    split = tmp_path / "split"
    train_losses(config(2), split)
    metrics = split / "metrics.jsonl"
    # A run killed after logging step 3 but before checkpointing it, in the middle of a line.
    with metrics.open("a") as f:
        f.write(json.dumps({"step": 3, "loss": 123.0}) + "\n" + '{"step": 4, "loss": 1.')
    stale = [split / "checkpoint-meta.pth.a1b2c3d4.tmp", split / "checkpoints" / "checkpoint_4.pth.zz_9yx87.tmp"]
    for path in stale:
        path.write_bytes(b"partial")
    unrelated = split / "notes.tmp"
    unrelated.write_text("mine")
    with caplog.at_level(logging.WARNING, logger="score_matching"):
        resumed = train_losses(config(4), split)
    assert resumed == full
    assert [r["step"] for r in read_metrics(metrics)] == [1, 2, 3, 4]
    torn = [r.getMessage() for r in caplog.records if "not a complete metrics record" in r.getMessage()]
    assert torn and f"{metrics} line 4 " in torn[0]
    assert not any(path.exists() for path in stale) and unrelated.exists()


def test_eval_reads_a_metrics_file_with_a_torn_last_line(tmp_path, caplog):
    from score_matching.metrics_log import training_summary

    rows = [{"step": 1, "time_per_step_ms": 10.0, "peak_memory_mib": 5.0}, {"step": 2, "time_per_step_ms": 30.0, "peak_memory_mib": 6.0}]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows) + '{"step": 3, "ti')
    with caplog.at_level(logging.WARNING, logger="score_matching"):
        summary = training_summary(tmp_path)
    assert summary["train_time_per_step_ms"] == 20.0 and summary["train_steps_logged"] == 2
    assert any("line 3 " in r.getMessage() for r in caplog.records)


def test_a_workdir_refuses_a_resume_with_another_model_loss_or_deq_config(tmp_path):
    config = lambda **o: tiny_config("nice_baseline", **{"loss__name": "mle", **o})  # noqa: E731
    train_losses(config(training__n_iters=2), tmp_path)
    stored = json.loads((tmp_path / "config.json").read_text())
    assert stored["deq"]["norm"] == "frobenius" and stored["loss"]["name"] == "mle" and stored["model"]["hidden"] == 16
    before = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*") if p.is_file()}
    with pytest.raises(ConfigMismatchError) as error:
        train_losses(config(training__n_iters=4, deq__norm="spectral", loss__name="ssm", model__hidden=12), tmp_path)
    message = str(error.value)
    for field in ("deq.norm: 'frobenius' -> 'spectral'", "loss.name: 'mle' -> 'ssm'", "model.hidden: 16 -> 12"):
        assert field in message
    assert "training.n_iters" not in message and "allow_config_change" in message
    assert {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*") if p.is_file()} == before  # no work done
    # Fields that say where the data is or how long to train may change freely.
    train_losses(config(training__n_iters=3, data__download=False, eval__batch_size=8), tmp_path)
    # An intended change is accepted with the flag, recorded, and becomes the stored config.
    train_losses(config(training__n_iters=4, loss__name="ssm", training__allow_config_change=True), tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["loss"]["name"] == "ssm"
    change = json.loads((tmp_path / "config_changes.jsonl").read_text().splitlines()[-1])
    assert change["changes"] == {"loss.name": ["mle", "ssm"]}


def test_a_field_added_to_the_code_after_a_workdir_started_does_not_block_its_resume(tmp_path):
    config = lambda **o: tiny_config("nice_baseline", **{"loss__name": "mle", **o})  # noqa: E731
    train_losses(config(training__n_iters=2), tmp_path)
    stored = json.loads((tmp_path / "config.json").read_text())
    del stored["model"]["hidden"]  # as if `model.hidden` had not existed when the run started
    (tmp_path / "config.json").write_text(json.dumps(stored))
    train_losses(config(training__n_iters=3), tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["model"]["hidden"] == 16
    change = json.loads((tmp_path / "config_changes.jsonl").read_text().splitlines()[-1])
    assert change["changes"] == {"model.hidden": ["<absent>", 16]}
    stored["model"]["hidden"] = 12  # a field present and changed is still refused
    (tmp_path / "config.json").write_text(json.dumps(stored))
    with pytest.raises(ConfigMismatchError, match="model.hidden: 12 -> 16"):
        train_losses(config(training__n_iters=4), tmp_path)


def test_checkpoints_hold_only_plain_data_and_the_rng_state_round_trips(tmp_path):
    import random

    import numpy as np

    from score_matching.checkpoint import rng_state, set_rng_state

    np.random.seed(3)
    random.seed(5)
    np.random.randn()  # leaves a cached Gaussian in numpy's state
    save_checkpoint(tmp_path / "rng.pth", {"rng": rng_state()})
    expected = (np.random.rand(), np.random.randn(), random.random(), torch.rand(1).item())
    set_rng_state(load_checkpoint(tmp_path / "rng.pth")["rng"])
    assert (np.random.rand(), np.random.randn(), random.random(), torch.rand(1).item()) == expected
    assert torch.serialization.get_unsafe_globals_in_checkpoint(tmp_path / "rng.pth") == []


def test_checkpoints_with_the_older_numpy_rng_state_still_load_and_restore_it(tmp_path):
    """Before the RNG state was saved as tensors, checkpoints held numpy's state tuple (a uint32 array)
    and Python's; the weights-only loader reads exactly those, and a resume restores them."""
    import random

    import numpy as np

    from score_matching.checkpoint import set_rng_state

    np.random.seed(11)
    random.seed(13)
    old_format = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    torch.save({"step": 7, "rng": old_format}, tmp_path / "old.pth")  # as the older save_checkpoint did
    expected = (np.random.rand(), random.random(), torch.rand(1).item())
    set_rng_state(load_checkpoint(tmp_path / "old.pth")["rng"])
    assert (np.random.rand(), random.random(), torch.rand(1).item()) == expected
