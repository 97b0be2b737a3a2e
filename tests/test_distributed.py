"""Data parallelism under torchrun (gloo, CPU): 2 processes train exactly like 1 with the same global batch."""
import os
import pathlib
import shutil
import subprocess
import sys

import pytest
import torch

REPO = pathlib.Path(__file__).resolve().parents[1]
FLAGS = [
    "--config=configs/nice_baseline.py", "--config.loss.name=mle", "--config.device=cpu",
    "--config.model.hidden=16", "--config.model.depth=2", "--config.training.batch_size=8",
    "--config.data.max_train=64", "--config.data.max_eval=16", "--config.training.n_iters=3",
    "--config.training.log_freq=1", "--config.training.eval_freq=0", "--config.training.preemption_freq=1",
]


def _train(workdir: pathlib.Path, nproc: int, mnist_root: pathlib.Path) -> dict:
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}"] if nproc > 1 else [sys.executable]
    env = {**os.environ, "SCORE_MATCHING_DATA": str(mnist_root), "OMP_NUM_THREADS": "1"}
    result = subprocess.run([*launcher, "main.py", f"--workdir={workdir}", *FLAGS], cwd=REPO, env=env,
                            capture_output=True, text=True, timeout=600)
    # Both streams, so that a rare launcher failure (rendezvous, port) can be diagnosed from CI's log.
    assert result.returncode == 0, f"exit {result.returncode}\nstdout:\n{result.stdout[-2000:]}\nstderr:\n{result.stderr[-3000:]}"
    return torch.load(workdir / "checkpoint-meta.pth", weights_only=False)["model"]


def test_two_process_run_matches_one_process_run(tmp_path, mnist_root):
    if shutil.which("torchrun") is None and not hasattr(torch.distributed, "run"):
        pytest.skip("torch.distributed.run is not available")
    single = _train(tmp_path / "one", 1, mnist_root)
    double = _train(tmp_path / "two", 2, mnist_root)
    assert single.keys() == double.keys()
    for key in single:
        assert torch.allclose(single[key], double[key], rtol=1e-5, atol=1e-6), key
