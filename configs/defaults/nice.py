"""NICE defaults (additive-coupling flow): the shared config plus the NICE's own fields."""
import ml_collections

from configs.default import get_default_config


def get_config() -> ml_collections.ConfigDict:
    """The shared default config with the NICE model, its data preprocessing and its SM-loss rows."""
    config = get_default_config()
    model = config.model
    model.name = "nice"
    model.activation = "elu"
    # width and number of hidden layers of each coupling's MLP (the swappable stack)
    model.hidden = 30
    model.depth = 2
    model.n_couplings = 4
    # "ssm" (the sliced-score-matching code's, as the paper's table 4: v/255 + U(-1/512, 1/512), clamped
    # to [1e-3, 1 - 1e-3], logit) | "bijective" ((v + u)/256, logit(alpha + (1 - 2 alpha) x), so a
    # pixel-space likelihood exists); logit_alpha is the bijective squashing.
    config.data.nice_preprocessing = "ssm"
    config.data.logit_alpha = 1e-6
    # The exact test SM loss costs d Hessian-vector products per image (d = 784), so it may use only the
    # first rows of the test set; 0 = all of them. Reported as n_sm_loss.
    config.eval.sm_loss_rows = 0
    return config
