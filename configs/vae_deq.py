"""DEQ-SSM VAE (paper table 1, table 7): the augmented layer is one conv DEQ block
z* = softplus(W * z* + g(y)), g a 5×5 conv c+1 -> m like the Aug(k) stack's first layer.

The host is the Aug(1) model (`patches.vae`: the block replaces the whole stack, so the host's depth
only decides which weights are drawn, not the architecture). W is spectrally normalised: a
Frobenius bound on a 5×5 kernel does not bound the convolution's operator norm (the paper's table
10 used Frobenius), so only the spectral norm with λ > 1 guarantees a contraction.
"""
from configs.vae_baseline import get_config as baseline_config


def get_config():
    config = baseline_config()
    config.model.augment_depth = 1
    config.deq.layers = "augment"
    config.deq.norm = "spectral"
    config.deq.norm_lambda = 2.0
    return config
