"""SSM NICE on MNIST (paper table 4): 4 couplings of 5-layer, 1000-unit softplus MLPs.

Other rows: --config.loss.name=mle|sm|ssm_vr|dsm (with --config.loss.sigma=0.1 or 1.74).
"""
from configs.defaults.nice import get_config as family_defaults


def get_config():
    config = family_defaults()
    config.model.name = "nice"
    config.model.activation = "softplus"
    config.model.hidden = 1000
    config.model.depth = 4  # 4 activated hidden layers + the output layer = 5 Linear layers
    config.model.n_couplings = 4
    config.model.ema_rate = 0.0
    config.loss.name = "ssm"
    config.data.dataset = "mnist"
    config.training.batch_size = 128
    config.training.n_iters = 1000
    config.training.log_freq = 50
    config.training.eval_freq = 250
    config.training.snapshot_freq = 1000
    config.training.preemption_freq = 100
    config.training.sample_freq = 0
    config.optim.lr = 1e-3
    config.eval.batch_size = 100
    config.data.max_eval = 1000
    return config
