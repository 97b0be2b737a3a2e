"""EMA, warm-up and clipping, and step-indexed batching, against closed forms."""
import pytest
import torch
from ml_collections import ConfigDict

from score_matching.batching import batch_indices
from score_matching.ema import ExponentialMovingAverage
from score_matching.optim import get_optimize_fn


def test_ema_follows_the_closed_form_and_swaps_cleanly():
    model = torch.nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        model.weight.fill_(0.0)
    ema = ExponentialMovingAverage(model, decay=0.9)
    for value in (1.0, 2.0, 3.0):
        with torch.no_grad():
            model.weight.fill_(value)
        ema.update(model)
    expected = ((0.9 * 0.0 + 0.1 * 1.0) * 0.9 + 0.1 * 2.0) * 0.9 + 0.1 * 3.0
    ema.swap_in(model)
    assert model.weight.item() == pytest.approx(expected)
    ema.swap_out(model)
    assert model.weight.item() == 3.0
    with pytest.raises(ValueError, match="decay"):
        ExponentialMovingAverage(model, decay=1.0)


def test_warmup_and_clipping():
    config = ConfigDict({"optim": {"lr": 0.1, "warmup": 4, "grad_clip": 1.0}})
    p = torch.nn.Parameter(torch.zeros(2))
    optimizer = torch.optim.SGD([p], lr=0.1)
    optimize_fn = get_optimize_fn(config)
    p.grad = torch.tensor([3.0, 4.0])  # norm 5, clipped to 1
    norm = optimize_fn(optimizer, [p], step=0)
    assert norm == pytest.approx(5.0)
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.1 * 1 / 4)
    assert torch.allclose(p.detach(), -0.025 * torch.tensor([0.6, 0.8]))
    p.grad = torch.tensor([0.3, 0.4])
    optimize_fn(optimizer, [p], step=10)
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.1)


def test_batches_cover_each_epoch_and_shard_the_global_batch():
    n, b = 10, 4
    epoch = torch.cat([batch_indices(n, b, step, seed=3) for step in range(2)])
    assert len(set(epoch.tolist())) == 8  # two full batches of distinct rows, the rest dropped
    assert not torch.equal(batch_indices(n, b, 0, seed=3), batch_indices(n, b, 2, seed=3))  # reshuffled
    shards = [batch_indices(n, b, 5, seed=3, rank=r, world_size=2) for r in range(2)]
    assert torch.equal(torch.cat(shards), batch_indices(n, b, 5, seed=3))
    with pytest.raises(ValueError, match="divisible"):
        batch_indices(n, 3, 0, seed=0, world_size=2)
