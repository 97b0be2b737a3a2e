"""Data parallelism under torchrun (gloo, CPU) with DEQ models.

What holds (docs/reliability.md): each process takes its shard of the global batch, and the step
averages the shards' gradients. So
- with a loss that draws no random numbers (NICE under maximum likelihood), 2 processes at global
  batch B train as 1 process at batch B;
- with one that does (NCSN's noise levels and noise), every process draws its shard's numbers from
  the same seeded stream, and with a loss that fits on the whole batch (DKEF's kernel weights α),
  each process fits on its own shard: 2 processes then equal the mean of the 2 shards' gradients,
  each computed as one process alone would, from the same random state. The reference below
  computes that mean by hand in this process.
"""
import os
import pathlib
import subprocess
import sys

import pytest
import torch

from main import model_transform_for
from score_matching.batching import batch_indices
from score_matching.checkpoint import load_checkpoint
from score_matching.optim import get_optimize_fn, get_optimizer
from score_matching.run import seed_everything
from score_matching.tasks import build_task
from tiny_runs import _RUN, _TINY, tiny_config, train_losses

REPO = pathlib.Path(__file__).resolve().parents[1]


def _torchrun_available() -> bool:
    try:
        import torch.distributed.run  # noqa: F401
    except ImportError:
        return False
    return torch.distributed.is_available() and torch.distributed.is_gloo_available()


pytestmark = pytest.mark.skipif(not _torchrun_available(), reason="torch.distributed.run or gloo is not available")


def _overrides(name: str, extra: dict) -> dict:
    return {**_TINY[name.split("_")[0]], **_RUN, **extra}


def _two_process_weights(name: str, extra: dict, workdir: pathlib.Path, data_root: pathlib.Path) -> dict:
    """Trains configs/<name>.py, shrunk as tiny_config(name, **extra), with 2 processes; the final weights."""
    flags = [f"--config.{key}={value}" for key, value in _overrides(name, extra).items()]
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    env = {**os.environ, "SCORE_MATCHING_DATA": str(data_root), "OMP_NUM_THREADS": "1"}
    result = subprocess.run([*launcher, "main.py", f"--config=configs/{name}.py", f"--workdir={workdir}", *flags],
                            cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    # Both streams, so that a rare launcher failure (rendezvous, port) can be diagnosed from CI's log.
    assert result.returncode == 0, f"exit {result.returncode}\nstdout:\n{result.stdout[-2000:]}\nstderr:\n{result.stderr[-3000:]}"
    return load_checkpoint(workdir / "checkpoint-meta.pth")["model"]


def _assert_close(got: dict, expected: dict, rtol: float, atol: float) -> None:
    assert got.keys() == expected.keys()
    for key in expected:
        torch.testing.assert_close(got[key], expected[key], rtol=rtol, atol=atol, msg=key)


def _sharded_reference(config, world_size: int) -> dict:
    """The final weights of a run whose every step averages the gradients of `world_size` shards, each
    taken from the same random state and the same buffers (the processes of a data-parallel run);
    rank 0's buffers are kept, as rank 0 writes the checkpoint."""
    seed_everything(config.seed)
    task = build_task(config, torch.device("cpu"), model_transform_for(config))
    model, training = task.model, config.training
    params = list(model.parameters())
    optimizer, optimize_fn = get_optimizer(config, params), get_optimize_fn(config)
    for step in range(training.n_iters):
        rng = torch.get_rng_state()
        buffers = {name: b.clone() for name, b in model.named_buffers()}
        mean_grads = [torch.zeros_like(p) for p in params]
        for rank in range(world_size):
            torch.set_rng_state(rng)
            model.load_state_dict({**model.state_dict(), **buffers})
            idx = batch_indices(task.n_train, training.batch_size, step, config.seed, rank, world_size)
            model.train()
            optimizer.zero_grad(set_to_none=True)
            task.loss_fn(model, task.get_batch(idx, step)).backward()
            for total, p in zip(mean_grads, params):
                if p.grad is not None:
                    total.add_(p.grad / world_size)
            if rank == 0:
                rank0_buffers = {name: b.clone() for name, b in model.named_buffers()}
        for p, grad in zip(params, mean_grads):
            p.grad = grad
        model.load_state_dict({**model.state_dict(), **rank0_buffers})
        optimize_fn(optimizer, params, step)
    return model.state_dict()


def test_two_processes_train_a_nice_deq_as_one_process_at_the_same_global_batch(tmp_path, mnist_root):
    extra = {"loss.name": "mle"}
    train_losses(tiny_config("nice_deq", **{k.replace(".", "__"): v for k, v in extra.items()}), tmp_path / "one")
    single = load_checkpoint(tmp_path / "one" / "checkpoint-meta.pth")["model"]
    double = _two_process_weights("nice_deq", extra, tmp_path / "two", mnist_root)
    assert any(".deq." in key for key in single)
    _assert_close(double, single, rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_two_processes_train_an_ncsn_deq_as_the_mean_of_their_shards_gradients(tmp_path, mnist_root):
    extra = {"training.n_iters": 2}
    reference = _sharded_reference(tiny_config("ncsn_deq", training__n_iters=2), world_size=2)
    double = _two_process_weights("ncsn_deq", extra, tmp_path, mnist_root)
    assert any(".deq." in key for key in reference)
    _assert_close(double, reference, rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_two_processes_train_a_dkef_deq_as_the_mean_of_their_shards_gradients(tmp_path, uci_root):
    """DKEF fits α on the batch, so a shard's loss is that of α fitted on the shard alone."""
    extra = {"training.n_iters": 2}
    reference = _sharded_reference(tiny_config("dkef_deq", training__n_iters=2), world_size=2)
    double = _two_process_weights("dkef_deq", extra, tmp_path, uci_root)
    _assert_close(double, reference, rtol=1e-5, atol=1e-6)
    # Not the full-batch run: the α fits differ.
    train_losses(tiny_config("dkef_deq", training__n_iters=2), tmp_path / "one")
    single = load_checkpoint(tmp_path / "one" / "checkpoint-meta.pth")["model"]
    assert any(not torch.allclose(single[k], double[k], rtol=1e-5, atol=1e-6) for k in single)
