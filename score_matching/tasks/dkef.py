"""DKEF density estimation on UCI tables and Gaussians, trained by a score-matching loss.

Each training batch is split in halves: α is fitted on the first, the loss taken on the second
(the DKEF / sliced-score-matching protocol). Evaluation refits α on the whole training set, then
reports the test SM loss, the importance-sampled log-likelihood with its standard error, and on
the Gaussians the Fisher divergence to the true density.
"""
from __future__ import annotations

import functools
import logging

import torch
from ml_collections import ConfigDict
from torch import Tensor, nn

from score_matching.datasets import UCI_NAMES
from score_matching.losses import LOG_DENSITY_LOSSES, LOSSES, SCORE_LOSSES, exact_score_matching, fisher_divergence
from score_matching.losses.common import check_choice
from score_matching.models import MODELS
from score_matching.models.dkef import split_batch_loss
from score_matching.models.mlp import initialize_linear_layers
from score_matching.models.dkef_normaliser import (
    IS_PROPOSALS,
    DefensiveGaussianProposal,
    DefensiveKDEProposal,
    Proposal,
    log_normaliser_importance_sampling,
    mean_log_likelihood,
)
from score_matching.tasks import ModelTransform, Task, register_task
from score_matching.tasks.common import chunked_mean, first_rows, load_data, loss_kwargs, seeded_rows

# DKEF's p̃ is unnormalised, so maximum likelihood is out.
DKEF_LOSSES = SCORE_LOSSES + tuple(name for name in LOG_DENSITY_LOSSES if name != "mle")


# The DKEF reference code fits α for its validation loss on 1000 random training rows.
VAL_ALPHA_ROWS = 1000
logger = logging.getLogger("score_matching")


@register_task("dkef")
def build(config: ConfigDict, device: torch.device, model_transform: ModelTransform) -> Task:
    """The DKEF task on a tabular dataset (UCI or Gaussian)."""
    if config.loss.name not in DKEF_LOSSES:
        raise ValueError(f"DKEF trains with a score-matching loss; config.loss.name={config.loss.name!r}, valid: {list(DKEF_LOSSES)}")
    name = config.data.dataset
    if name in UCI_NAMES:
        kwargs, data_protocol = {"protocol": config.data.protocol}, config.data.protocol
    else:
        kwargs, data_protocol = {"distribution": config.data.gaussian}, f"gaussian:{config.data.gaussian}"
    data = load_data(config, **kwargs)
    train = first_rows(data.train, config.data.max_train).to(device)
    test = first_rows(data.test, config.data.max_eval).to(device)
    m = config.model
    model = MODELS.get("dkef")(
        in_features=train.shape[1],
        n_inducing=m.n_inducing,
        n_kernels=m.n_kernels,
        hidden=m.hidden,
        depth=m.depth,
        latent=m.latent,
        q0_std=m.q0_std,
        activation=m.activation,
        stack_init=m.stack_init,
        init_bandwidths=tuple(m.init_bandwidths),
        out_layer=m.feature_out_layer,
        skip=m.feature_skip,
    ).to(device)
    model.init_inducing_points(train, torch.Generator(device=device).manual_seed(config.seed))
    model = model_transform(model, (train[:4],))
    # After the transform, so that the layers a patch swapped in are initialised the same way.
    initialize_linear_layers(model.features, m.feature_init)
    loss = functools.partial(LOSSES.get(config.loss.name), **loss_kwargs(config))
    takes_log_density = config.loss.name in LOG_DENSITY_LOSSES
    exact_sm = functools.partial(exact_score_matching, trace=config.loss.trace)
    chunk = config.eval.batch_size

    def test_sm_loss(net: nn.Module, x: Tensor) -> float:
        return chunked_mean(lambda part: exact_sm(net.score, part), x, chunk, phase=f"exact test SM loss of {len(x)} rows")

    def is_proposal(net: nn.Module) -> Proposal | None:
        """The importance-sampling proposal named by eval.is_proposal; None = q0."""
        check_choice("eval.is_proposal", config.eval.is_proposal, IS_PROPOSALS)
        if config.eval.is_proposal == "q0":
            return None
        if config.eval.is_proposal == "defensive_gaussian":
            return DefensiveGaussianProposal(train, q0_std=net.q0_std)
        return DefensiveKDEProposal(seeded_rows(train, config.eval.is_kde_centres, config.seed), q0_std=net.q0_std)

    def evaluate(net: nn.Module) -> dict[str, float]:
        generator = torch.Generator(device=device).manual_seed(config.seed)
        logger.info("importance sampling log Z (proposal %s): rounds of %d samples until the std error is at most %g "
                    "or %d samples are drawn", config.eval.is_proposal, config.eval.is_samples,
                    config.eval.is_target_std_error, config.eval.is_max_samples)
        log_z, log_z_se, n_is = log_normaliser_importance_sampling(
            net, config.eval.is_samples, generator=generator, target_std_error=config.eval.is_target_std_error,
            max_samples=config.eval.is_max_samples, proposal=is_proposal(net),
        )
        logger.info("log Z = %.4f ± %.3g from %d importance samples", log_z, log_z_se, n_is)
        metrics = {
            "test_sm_loss": test_sm_loss(net, test),
            "test_log_likelihood": mean_log_likelihood(net, test, log_z),
            "log_normaliser": log_z,
            "log_normaliser_std_error": log_z_se,
            "is_samples": n_is,
            "is_proposal": config.eval.is_proposal,
            "n_test": len(test),
            "params": sum(p.numel() for p in net.parameters()),
            "data_protocol": data_protocol,
        }
        if hasattr(data, "true_score"):
            metrics["test_fisher_divergence"] = chunked_mean(
                lambda part: fisher_divergence(net.score, part, data.true_score), test, chunk
            )
            metrics["true_test_log_likelihood"] = data.true_log_density(test.cpu()).mean().item()
        return metrics

    val = data.val.to(device)
    val_alpha_rows = seeded_rows(train, VAL_ALPHA_ROWS, config.seed)

    def val_loss(net: nn.Module) -> float:
        """Exact SM loss on the validation split under α fitted on VAL_ALPHA_ROWS fixed training rows."""
        alpha = net.refit_alpha(val_alpha_rows, chunk)
        return chunked_mean(lambda part: exact_sm(functools.partial(net.score, alpha=alpha), part), val, chunk)

    def quick_eval(net: nn.Module) -> dict[str, float]:
        alpha = net.fit_alpha(train[: config.training.batch_size]).detach()
        part = test[:chunk]
        return {"test_sm_loss": exact_sm(functools.partial(net.score, alpha=alpha), part).item()}

    return Task(
        model=model,
        n_train=len(train),
        get_batch=lambda idx, step: train[idx.to(device)],
        loss_fn=lambda net, x: split_batch_loss(net, x, loss, takes_log_density),
        evaluate=evaluate,
        quick_eval=quick_eval,
        prepare_eval=lambda net: net.finalize(train),
        val_loss=val_loss,
    )
