"""DEQ-SSM-VR NCSN on MNIST (paper tables 8(b) and 9): TwoRes with `deq_res` as a DEQ-ResBlock."""
from configs.ncsn_twores import get_config as twores_config


def get_config():
    config = twores_config()
    config.deq.layers = "deq_res"
    config.deq.warm_start = False
    return config
