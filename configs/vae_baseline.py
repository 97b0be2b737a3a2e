"""SSM VAE (paper §4.1, table 1 row "SSM VAE"): implicit encoder, decoder, score estimator without
an augmented layer; CPU-sized on MNIST (32×32 zero-padded, dynamically binarised, Bernoulli decoder).

Paper sizes (CelebA 64×64, CIFAR-10 32×32): m = 64, D_z = 32, noise 32 (the sliced-score-matching
code's configs/vae/celeba_ssm.yml), Gaussian decoder on [-1, 1] data, batch 128, 100k iterations,
Adam lr 1e-4, weight decay 1e-12: the "table1/..." rows of configs/paper_rows.py.
The score estimator trains with SSM-VR and Gaussian projections, as the reference code's
`elbo_ssm`; --config.loss.name=ssm for the paper's equation 3.
"""
from configs.defaults.vae import get_config as family_defaults


def get_config():
    config = family_defaults()
    config.model.name = "ssm_vae"
    config.model.vae_width = 16
    config.model.z_dim = 16
    config.model.noise_dim = 16
    config.model.augment_depth = 0
    config.model.likelihood = "bernoulli"
    config.model.ema_rate = 0.0  # the reference code keeps no EMA
    config.loss.name = "ssm_vr"
    config.loss.projection = "gaussian"
    config.loss.n_particles = 1
    config.data.dataset = "mnist"
    config.data.image_size = 32  # the 4 stride-2 convs need a side divisible by 16
    config.data.max_eval = 1000
    config.training.batch_size = 128
    config.training.n_iters = 2000
    config.training.log_freq = 50
    config.training.eval_freq = 500
    config.training.snapshot_freq = 1000
    config.training.preemption_freq = 100
    config.training.sample_freq = 1000
    config.optim.lr = 1e-4
    config.optim.weight_decay = 1e-12
    config.eval.batch_size = 256
    config.sampling.n_samples = 64
    return config
