"""TwoRes-SSM-VR NCSN on MNIST (paper table 8(b) with the DEQ turned off): a short CPU-sized run.

Sized so that the README's quick start (train, samples, eval) fits in minutes on a 2-core CPU.
Paper scale: configs/paper_rows.py ("table5/...": CIFAR-10, ngf 128, batch 128, 200k steps).
"""
from configs.defaults.ncsn import get_config as family_defaults


def get_config():
    config = family_defaults()
    config.model.name = "ncsn_twores"
    config.model.ngf = 8
    config.model.activation = "elu"
    config.model.ema_rate = 0.99  # a 0.999 average would still be mostly the initial weights after 200 steps
    config.loss.name = "anneal_ssm_vr"
    config.data.dataset = "mnist"
    config.data.image_size = 28
    config.training.batch_size = 32
    config.training.n_iters = 200
    config.training.log_freq = 25
    config.training.eval_freq = 100
    config.training.snapshot_freq = 200
    config.training.preemption_freq = 50
    config.training.sample_freq = 200
    config.sampling.n_samples = 36
    config.sampling.n_steps_each = 10
    config.eval.batch_size = 128
    config.data.max_eval = 512
    # The MNIST classifier FD (not comparable to published FIDs) on 256 samples drawn with the
    # sampling grid's 10 steps per level, a short sampling run on a CPU; the minimum
    # for its 128-d features is 129, and a paper-style evaluation would use 10k samples.
    config.eval.classifier_fd_samples = 256
    config.eval.n_steps_each = 10
    return config
