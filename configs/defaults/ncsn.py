"""NCSN defaults (RefineNet and TwoRes score networks): the shared config plus the NCSN's own fields."""
import ml_collections

from configs.default import add_sample_quality_fields, get_default_config


def get_config() -> ml_collections.ConfigDict:
    """The shared default config with the NCSN model fields and its sampling evaluation."""
    config = add_sample_quality_fields(get_default_config())
    model = config.model
    model.name = "ncsn_twores"  # ncsn_twores | ncsn_refinenet
    model.activation = "elu"
    model.ngf = 64
    model.conditioning = "cin++"  # cin++ (NCSN v1) | sigma (NCSN v2)
    model.deq_res_blocks = 1  # ncsn_twores: residual blocks at deq_res (> 1: the explicit twin of a DEQ that deep)
    model.num_scales = 10
    model.sigma_max = 1.0
    model.sigma_min = 0.01
    config.eval.n_steps_each = 100  # Langevin steps per noise level when drawing samples for FID / classifier FD
    return config
