"""NCSN: noise-conditional score networks trained with an annealed loss, sampled by annealed Langevin.

Evaluation: the test loss, plus the sample-quality metrics configured in config.eval (see
`score_matching.evaluation.image_metrics`: `mnist_classifier_fd` on MNIST, the standard `fid`
when eval.inception_weights is set), on samples drawn with eval.n_steps_each steps per level.
"""
from __future__ import annotations

import functools
import logging
import math

import torch
from ml_collections import ConfigDict
from torch import Tensor, nn

from score_matching.evaluation.image_metrics import image_sample_metrics
from score_matching.losses import LOSSES
from score_matching.models import MODELS
from score_matching.metrics_log import PhaseProgress
from score_matching.sampling import (
    StepCallback,
    annealed_langevin_dynamics,
    geometric_sigmas,
    langevin_progress,
    langevin_step_count,
)
from score_matching.tasks import ModelTransform, Task, register_task
from score_matching.tasks.common import load_data, loss_kwargs, stack_images

ANNEALED_LOSSES = ("anneal_dsm", "anneal_ssm_vr")
logger = logging.getLogger("score_matching")


def build_ncsn_model(config: ConfigDict, in_channels: int) -> nn.Module:
    """The registered NCSN model named config.model.name, with the config's noise levels."""
    m = config.model
    sigmas = geometric_sigmas(m.sigma_max, m.sigma_min, m.num_scales)
    depth = {"deq_res_blocks": m.deq_res_blocks} if m.name == "ncsn_twores" else {}
    return MODELS.get(m.name)(
        sigmas=sigmas,
        in_channels=in_channels,
        image_size=config.data.image_size,
        ngf=m.ngf,
        activation=m.activation,
        conditioning=m.conditioning,
        **depth,
    )


@register_task("ncsn_refinenet", "ncsn_twores")
def build(config: ConfigDict, device: torch.device, model_transform: ModelTransform) -> Task:
    """The NCSN task: annealed DSM or SSM-VR on images in [0, 1]."""
    if config.loss.name not in ANNEALED_LOSSES:
        raise ValueError(f"NCSN trains with an annealed loss; config.loss.name={config.loss.name!r}, valid: {list(ANNEALED_LOSSES)}")
    data = load_data(config, image_size=config.data.image_size)
    channels = data.image_shape[0]
    n_train = len(data.train) if config.data.max_train <= 0 else min(config.data.max_train, len(data.train))
    model = build_ncsn_model(config, channels).to(device)
    sigmas = model.sigmas
    probe = stack_images(data.train, torch.arange(2), device)
    model = model_transform(model, (probe, torch.zeros(2, dtype=torch.long, device=device)))
    loss = functools.partial(LOSSES.get(config.loss.name), sigmas=sigmas, **loss_kwargs(config))
    n_test = len(data.test) if config.data.max_eval <= 0 else min(config.data.max_eval, len(data.test))

    def loss_fn(net: nn.Module, x: Tensor) -> Tensor:
        return loss(net, x)

    def test_loss(net: nn.Module, n_rows: int) -> float:
        generator = torch.Generator(device=device).manual_seed(config.seed)
        total = 0.0
        batch = config.eval.batch_size
        for start in range(0, n_rows, batch):
            idx = torch.arange(start, min(start + batch, n_rows))
            x = stack_images(data.test, idx, device)
            total += loss(net, x, generator=generator).item() * len(idx)
        return total / n_rows

    def langevin(net: nn.Module, n: int, generator: torch.Generator, n_steps_each: int,
                 callback: StepCallback | None = None) -> Tensor:
        x_init = torch.rand((n, *data.image_shape), generator=generator, device=device)
        s = config.sampling
        with torch.no_grad():  # a score network needs no graph to be evaluated
            x = annealed_langevin_dynamics(net, x_init, sigmas, n_steps_each, s.step_lr, s.denoise, generator=generator,
                                           callback=callback)
        return x.clamp(0.0, 1.0)

    def sample(net: nn.Module, n: int, generator: torch.Generator) -> Tensor:
        steps = config.sampling.n_steps_each
        progress = PhaseProgress(f"sampling {n} images", langevin_step_count(len(sigmas), steps, config.sampling.denoise))
        return langevin(net, n, generator, steps, langevin_progress(progress, len(sigmas), steps))

    def draw_for_eval(net: nn.Module, n: int) -> Tensor:
        """n samples for the sample-quality metrics, in batches of eval.batch_size with eval.n_steps_each."""
        generator = torch.Generator(device=device).manual_seed(config.seed)
        batch = config.eval.batch_size
        steps = config.eval.n_steps_each
        per_batch = langevin_step_count(len(sigmas), steps, config.sampling.denoise)
        n_batches = math.ceil(n / batch)
        logger.info("drawing %d samples for the sample metrics: %d batch(es) of up to %d, %d Langevin steps each",
                    n, n_batches, batch, per_batch)
        progress = PhaseProgress(f"sampling {n} images for the sample metrics", n_batches * per_batch)
        return torch.cat([
            langevin(net, min(batch, n - start), generator, steps,
                     langevin_progress(progress, len(sigmas), steps, offset=index * per_batch)).cpu()
            for index, start in enumerate(range(0, n, batch))
        ])

    def evaluate(net: nn.Module) -> dict[str, float]:
        metrics = {f"test_{config.loss.name}_loss": test_loss(net, n_test), "n_test": n_test}
        quality = image_sample_metrics(config, data.train, data.test, lambda n: draw_for_eval(net, n), device)
        return {**metrics, **quality}

    return Task(
        model=model,
        n_train=n_train,
        get_batch=lambda idx, step: stack_images(data.train, idx, device),
        loss_fn=loss_fn,
        evaluate=evaluate,
        quick_eval=lambda net: {f"test_{config.loss.name}_loss": test_loss(net, min(n_test, config.eval.batch_size))},
        sample=sample,
    )
