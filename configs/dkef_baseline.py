"""SM DKEF on UCI Parkinsons (paper table 2): 3-layer feature nets (depth 2), exact score matching.

Other paper rows: --config.loss.name=ssm|ssm_vr|dsm, --config.model.depth=7 (8-layer) or 15
(16-layer), --config.data.dataset=redwine|whitewine|gaussian100|gaussian200 (with
--config.model.latent=200 on the Gaussians); see configs/paper_rows.py.
"""
from configs.defaults.dkef import get_config as family_defaults


def get_config():
    config = family_defaults()
    config.model.name = "dkef"
    config.model.activation = "softplus"
    config.model.hidden = 30
    config.model.depth = 2
    config.model.latent = 64
    config.model.ema_rate = 0.0
    config.loss.name = "sm"
    config.data.dataset = "parkinsons"
    config.data.download = False
    config.training.batch_size = 32
    config.training.n_iters = 44_700  # 300 epochs of the 4760 training rows
    config.training.log_freq = 100
    config.training.eval_freq = 1000
    config.training.snapshot_freq = 5000
    config.training.preemption_freq = 500
    config.training.sample_freq = 0
    config.optim.lr = 1e-3
    config.eval.batch_size = 100
    return config
