"""Aug(16)-SSM VAE (paper table 1, table 7): the baseline with 16 stride-1 5×5 softplus convs of m
channels as the score estimator's augmented pre-processing layer."""
from configs.vae_baseline import get_config as baseline_config


def get_config():
    config = baseline_config()
    config.model.augment_depth = 16
    return config
