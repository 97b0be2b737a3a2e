"""SSM-VAE (paper §4.1, table 1): an implicit-encoder VAE trained with a score estimator.

Each training step is one backward of `ssm_vae_loss` (see `vae_objective`): the score estimator
learns ∇_z log q(z|x) by SSM or SSM-VR on detached z ~ q(z|x), and the encoder and decoder learn
from the negative ELBO whose entropy gradient comes from the (detached) score estimate.

Data (`model.likelihood`): "bernoulli" for MNIST (dynamically binarised, decoder logits), "gaussian"
for CIFAR-10 / CelebA (scaled to [-1, 1] and dequantised, tanh decoder mean with fixed
σ = exp(model.decoder_log_std)), as the sliced-score-matching VAE code. Test images are
preprocessed once with a generator seeded by config.seed, so evaluations are comparable.

Metrics (`evaluate`, on the first data.max_eval test images):
- test_<loss>_loss: the score estimator's SSM / SSM-VR loss at z ~ q(z|x);
- test_neg_elbo_surrogate: recon + prior + S(x, z)ᵀz at one z per image, the quantity the reference
  code's `elbo_ssm` returns as its test loss. Its entropy part only has the right *gradient*, so
  it is not the negative ELBO's value;
- test_elbo (with test_recon_nll, test_neg_log_prior, test_entropy): an ELBO estimate whose
  E_q[log q(z|x)] is −Ĥ, the Kozachenko–Leonenko k-NN entropy of eval.entropy_samples draws of
  z|x per image (k = eval.entropy_neighbours). It is consistent, but biased when the draws are few
  for the dimension (upward, by nats at D_z = 32, for Gaussians); compare models only at equal D_z
  and draws;
- params, params_encoder, params_decoder, params_score_net (the paper's #Param column matches the
  score estimator's count at the CelebA sizes: 8.7M here against its 8.8M);
- the sample-quality metrics of decoder samples at z ~ N(0, I) configured in config.eval (the
  standard FID with local Inception weights, the MNIST classifier FD on MNIST), as for NCSN.
"""
from __future__ import annotations

import functools

import torch
from ml_collections import ConfigDict
from torch import Tensor, nn

from score_matching.evaluation.image_metrics import image_sample_metrics
from score_matching.losses import LOSSES
from score_matching.models import MODELS
from score_matching.tasks import ModelTransform, Task, register_task
from score_matching.tasks.common import load_data, loss_kwargs, stack_images
from score_matching.tasks.vae_objective import (
    decoded_images,
    elbo_knn,
    model_inputs,
    neg_elbo_surrogate,
    reconstruction_nll,
    score_estimator_loss,
    ssm_vae_loss,
)

ESTIMATOR_LOSSES = ("ssm", "ssm_vr")
def _count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _rows(n_available: int, limit: int) -> int:
    return n_available if limit <= 0 else min(limit, n_available)


@register_task("ssm_vae")
def build(config: ConfigDict, device: torch.device, model_transform: ModelTransform) -> Task:
    """The SSM-VAE task on config.data's images."""
    if config.loss.name not in ESTIMATOR_LOSSES:
        raise ValueError(f"the SSM-VAE score estimator trains with {list(ESTIMATOR_LOSSES)}; config.loss.name={config.loss.name!r}")
    m, likelihood = config.model, config.model.likelihood
    data = load_data(config, image_size=config.data.image_size)
    model = MODELS.get("ssm_vae")(
        image_shape=data.image_shape, width=m.vae_width, z_dim=m.z_dim, noise_dim=m.noise_dim,
        augment_depth=m.augment_depth, likelihood=likelihood,
    ).to(device)
    probe = stack_images(data.train, torch.arange(2), device)
    model = model_transform(model, (model_inputs(probe, likelihood), torch.zeros(2, m.z_dim, device=device)))

    score_loss = functools.partial(LOSSES.get(config.loss.name), **loss_kwargs(config))
    nll = functools.partial(reconstruction_nll, likelihood=likelihood, log_std=m.decoder_log_std)
    n_test = _rows(len(data.test), config.data.max_eval)
    test_generator = torch.Generator(device=device).manual_seed(config.seed)
    test = model_inputs(stack_images(data.test, torch.arange(n_test), device), likelihood, test_generator)
    chunk = config.eval.batch_size
    n_draws = config.eval.entropy_samples

    def loss_fn(net: nn.Module, x: Tensor) -> Tensor:
        return ssm_vae_loss(net, x, score_loss, nll)

    def score_and_surrogate(net: nn.Module, x: Tensor) -> dict[str, float]:
        generator = torch.Generator(device=device).manual_seed(config.seed)
        totals = {f"test_{config.loss.name}_loss": 0.0, "test_neg_elbo_surrogate": 0.0}
        for part in x.split(chunk):
            with torch.no_grad():
                z = net.encode(part, generator)
            ssm, score = score_estimator_loss(net, part, z, score_loss, generator)
            with torch.no_grad():
                surrogate = neg_elbo_surrogate(net, part, z, score, nll).mean()
            totals[f"test_{config.loss.name}_loss"] += ssm.item() * len(part)
            totals["test_neg_elbo_surrogate"] += surrogate.item() * len(part)
        return {key: value / len(x) for key, value in totals.items()}

    def elbo(net: nn.Module, x: Tensor) -> dict[str, float]:
        generator = torch.Generator(device=device).manual_seed(config.seed)
        sums = {"recon": 0.0, "prior": 0.0, "entropy": 0.0, "elbo": 0.0}
        for part in x.split(max(1, chunk // n_draws)):
            estimate = elbo_knn(net, part, nll, n_draws, config.eval.entropy_neighbours, generator)
            for key in sums:
                sums[key] += estimate[key].sum().item()
        names = {"recon": "test_recon_nll", "prior": "test_neg_log_prior", "entropy": "test_entropy", "elbo": "test_elbo"}
        return {names[key]: value / len(x) for key, value in sums.items()}

    def sample(net: nn.Module, n: int, generator: torch.Generator) -> Tensor:
        z = torch.randn(n, m.z_dim, generator=generator, device=device)
        with torch.no_grad():
            return decoded_images(net.decode(z), likelihood)

    def draw_for_eval(net: nn.Module, n: int) -> Tensor:
        generator = torch.Generator(device=device).manual_seed(config.seed)
        return torch.cat([sample(net, min(chunk, n - start), generator).cpu() for start in range(0, n, chunk)])

    def evaluate(net: nn.Module) -> dict[str, float]:
        return {
            **score_and_surrogate(net, test),
            **elbo(net, test),
            "n_test": n_test,
            "params": _count(net),
            **{f"params_{name}": _count(part) for name, part in net.named_children()},
            **image_sample_metrics(config, data.train, data.test, lambda n: draw_for_eval(net, n), device),
        }

    return Task(
        model=model,
        n_train=_rows(len(data.train), config.data.max_train),
        get_batch=lambda idx, step: model_inputs(stack_images(data.train, idx, device), likelihood),
        loss_fn=loss_fn,
        evaluate=evaluate,
        quick_eval=lambda net: score_and_surrogate(net, test[:chunk]),
        sample=sample,
    )
