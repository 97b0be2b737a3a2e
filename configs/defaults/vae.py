"""SSM-VAE defaults (implicit encoder, decoder, score estimator): the shared config plus the VAE's own fields."""
import ml_collections

from configs.default import add_sample_quality_fields, get_default_config


def get_config() -> ml_collections.ConfigDict:
    """The shared default config with the SSM-VAE model (paper table 6) and its ELBO evaluation."""
    config = add_sample_quality_fields(get_default_config())
    model = config.model
    model.name = "ssm_vae"
    model.vae_width = 64  # m: channels of the first strided conv (then 2m, 4m, 8m) and of the augmented layer
    model.z_dim = 32  # D_z
    model.noise_dim = 32  # dimension of the implicit encoder's noise ε
    model.augment_depth = 0  # k stride-1 convs in the score estimator's augmented layer (0 = SSM VAE baseline)
    model.likelihood = "bernoulli"  # p(x|z): bernoulli (binarised MNIST, logits) | gaussian ([-1, 1] data, tanh mean)
    model.decoder_log_std = -0.602  # gaussian p(x|z): fixed log σ per pixel on the [-1, 1] scale (reference code's)
    config.eval.entropy_samples = 128  # test ELBO: draws of z|x per image for the k-NN entropy of q(z|x)
    config.eval.entropy_neighbours = 1  # test ELBO: k of the Kozachenko–Leonenko entropy estimate
    return config
