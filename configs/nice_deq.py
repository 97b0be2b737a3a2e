"""DEQ-SSM NICE (paper table 4): each coupling MLP's hidden stack is one dense DEQ block of width 1000."""
from configs.nice_baseline import get_config as baseline_config


def get_config():
    config = baseline_config()
    config.deq.layers = "coupling"
    return config
