"""SSM-VR NCSN on MNIST: the 4-cascaded RefineNet baseline (paper table 8(a)), CPU-sized."""
from configs.ncsn_twores import get_config as twores_config


def get_config():
    config = twores_config()
    config.model.name = "ncsn_refinenet"
    return config
