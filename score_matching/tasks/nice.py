"""NICE on MNIST: maximum likelihood or a score-matching loss, with exact log-likelihoods.

Pixels are dequantised and mapped to logit space by `data.nice_preprocessing` (see
`score_matching.datasets.transforms`): "ssm", the sliced-score-matching code's (the paper's table 4),
or "bijective", x = (v + u)/256 and y = logit(α + (1 − 2α)x). The model's density is over y.
Log-likelihoods are reported in logit space (as that code and the paper's table 4) and, for
"bijective", also in pixel space (adding the transform's log-determinant).
"""
from __future__ import annotations

import functools
from typing import Callable

import torch
from ml_collections import ConfigDict
from torch import Tensor, nn

from score_matching.batching import epoch_and_position, epoch_seed
from score_matching.datasets import (
    NICE_PREPROCESSINGS,
    clamped_logit_transform,
    logit_transform,
    logit_transform_logdet,
    ssm_dequantize,
    uniform_dequantize,
)
from score_matching.losses.common import check_choice
from score_matching.losses import LOG_DENSITY_LOSSES, LOSSES, exact_score_matching, score_from_log_density
from score_matching.models import MODELS
from score_matching.tasks import ModelTransform, Task, register_task
from score_matching.tasks.common import chunked_mean, first_rows, load_data, loss_kwargs


class EpochDequantizer:
    """Dequantised training rows whose noise is a function of (seed, epoch, row) alone.

    The noise of a whole epoch is drawn at once from a generator seeded by (seed, epoch), so every
    process of a data-parallel run, and a resumed run, sees the same dequantised x for a row.
    `dequantize(images_u8, generator)` is the dequantisation.
    """

    def __init__(self, images_u8: Tensor, batch_size: int, seed: int, dequantize: Callable[..., Tensor]) -> None:
        self.images, self.batch_size, self.seed, self.dequantize = images_u8, batch_size, seed, dequantize
        self._epoch, self._pixels = -1, images_u8

    def rows(self, idx: Tensor, step: int) -> Tensor:
        """The dequantised rows idx at training step `step`."""
        epoch, _ = epoch_and_position(step, len(self.images), self.batch_size)
        if epoch != self._epoch:
            generator = torch.Generator().manual_seed(epoch_seed(self.seed, epoch) + 1)  # +1: not the shuffle's stream
            self._epoch, self._pixels = epoch, self.dequantize(self.images, generator)
        return self._pixels[idx]


@register_task("nice")
def build(config: ConfigDict, device: torch.device, model_transform: ModelTransform) -> Task:
    """The NICE task on flattened, dequantised, logit-transformed MNIST."""
    check_choice("data.nice_preprocessing", config.data.nice_preprocessing, NICE_PREPROCESSINGS)
    bijective = config.data.nice_preprocessing == "bijective"
    alpha = config.data.logit_alpha
    dequantize = uniform_dequantize if bijective else ssm_dequantize
    to_logit = functools.partial(logit_transform, alpha=alpha) if bijective else clamped_logit_transform
    data = load_data(config)
    train_u8 = first_rows(data.train.images, config.data.max_train).flatten(1)
    test_u8 = first_rows(data.test.images, config.data.max_eval).flatten(1)
    test_generator = torch.Generator().manual_seed(config.seed)
    test_pixels = dequantize(test_u8, test_generator).to(device)
    test = to_logit(test_pixels)
    dequantized = EpochDequantizer(train_u8, config.training.batch_size, config.seed, dequantize)
    m = config.model
    model = MODELS.get("nice")(
        in_features=train_u8.shape[1], hidden=m.hidden, n_couplings=m.n_couplings, depth=m.depth, activation=m.activation
    ).to(device)
    model = model_transform(model, (test[:2],))
    chunk = config.eval.batch_size

    loss = functools.partial(LOSSES.get(config.loss.name), **loss_kwargs(config))
    takes_log_density = config.loss.name in LOG_DENSITY_LOSSES

    def loss_fn(net: nn.Module, y: Tensor) -> Tensor:
        return loss(net if takes_log_density else score_from_log_density(net), y)

    def log_likelihoods(net: nn.Module) -> dict[str, float]:
        with torch.no_grad():
            logit_ll = torch.cat([net(part) for part in test.split(chunk)])
        metrics = {"test_log_likelihood_logit_space": logit_ll.mean().item()}
        if bijective:
            metrics["test_log_likelihood_pixel_space"] = (logit_ll + logit_transform_logdet(test_pixels, alpha)).mean().item()
        return metrics

    def test_sm_loss(net: nn.Module, y: Tensor) -> float:
        score = score_from_log_density(net)
        return chunked_mean(lambda part: exact_score_matching(score, part, trace=config.loss.trace), y, chunk,
                            phase=f"exact test SM loss of {len(y)} rows")

    sm_rows = test[: config.eval.sm_loss_rows] if config.eval.sm_loss_rows > 0 else test

    def evaluate(net: nn.Module) -> dict[str, float]:
        return {
            **log_likelihoods(net),
            "test_sm_loss": test_sm_loss(net, sm_rows),
            "n_test": len(test),
            "n_sm_loss": len(sm_rows),
            "params": sum(p.numel() for p in net.parameters()),
        }

    return Task(
        model=model,
        n_train=len(train_u8),
        get_batch=lambda idx, step: to_logit(dequantized.rows(idx, step).to(device)),
        loss_fn=loss_fn,
        evaluate=evaluate,
        quick_eval=log_likelihoods,
    )
