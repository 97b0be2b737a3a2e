"""DEQ-SM DKEF (paper tables 2 and 3): each feature net's hidden stack is one dense DEQ block."""
from configs.dkef_baseline import get_config as baseline_config


def get_config():
    config = baseline_config()
    config.deq.layers = "feature"
    return config
