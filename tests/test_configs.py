"""Config layout: a shared default plus one defaults file per model family, each holding only the
fields its model's code reads (the lists below are written out from the tasks, not from the configs)."""
import importlib

import pytest

from configs.default import get_default_config

SHARED_MODEL_FIELDS = {"name", "ema_rate"}
# config.model fields each family's task reads (score_matching/tasks/<family>.py)
MODEL_FIELDS = {
    "ncsn": {"activation", "ngf", "conditioning", "num_scales", "sigma_max", "sigma_min", "deq_res_blocks"},
    "dkef": {"activation", "hidden", "depth", "stack_init", "latent", "n_kernels", "n_inducing", "q0_std",
             "feature_out_layer", "feature_skip", "feature_init", "init_bandwidths"},
    "nice": {"activation", "hidden", "depth", "n_couplings"},
    "vae": {"vae_width", "z_dim", "noise_dim", "augment_depth", "likelihood", "decoder_log_std"},
}
# data / eval fields that only one family's task reads (sample-quality fields: the image models)
OWN_FIELDS = {
    "ncsn": {"eval.n_steps_each", "eval.fid_samples", "eval.inception_weights", "eval.classifier_fd_samples",
             "eval.classifier_path", "eval.confidence_threshold", "eval.cache_dir"},
    "dkef": {"data.protocol", "data.gaussian", "eval.is_samples", "eval.is_target_std_error", "eval.is_max_samples",
             "eval.is_proposal", "eval.is_kde_centres"},
    "nice": {"data.nice_preprocessing", "data.logit_alpha", "eval.sm_loss_rows"},
    "vae": {"eval.entropy_samples", "eval.entropy_neighbours", "eval.fid_samples", "eval.inception_weights",
            "eval.classifier_fd_samples", "eval.classifier_path", "eval.confidence_threshold", "eval.cache_dir"},
}
EXPERIMENTS = {
    "ncsn": ("ncsn_baseline", "ncsn_twores", "ncsn_deq"), "dkef": ("dkef_baseline", "dkef_deq", "dkef_deq_authors", "dkef_deq_linear"),
    "nice": ("nice_baseline", "nice_deq"), "vae": ("vae_baseline", "vae_aug8", "vae_aug16", "vae_deq"),
}


def _dotted(config, sections=("data", "eval")) -> set[str]:
    return {f"{section}.{key}" for section in sections for key in config[section]}


@pytest.mark.parametrize("family", sorted(EXPERIMENTS))
def test_each_experiment_holds_its_familys_fields_and_no_other_models(family):
    shared = _dotted(get_default_config())
    assert set(get_default_config().model) == SHARED_MODEL_FIELDS
    for name in EXPERIMENTS[family]:
        config = importlib.import_module(f"configs.{name}").get_config()
        assert set(config.model) == SHARED_MODEL_FIELDS | MODEL_FIELDS[family], name
        assert _dotted(config) == shared | OWN_FIELDS[family], name


def test_the_shared_default_holds_no_models_own_fields():
    shared = _dotted(get_default_config())
    for family, own in OWN_FIELDS.items():
        assert not shared & own, family
