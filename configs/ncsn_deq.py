"""DEQ-SSM-VR NCSN on MNIST (paper tables 8(b) and 9): TwoRes with `deq_res` as a DEQ-ResBlock.

h's two convolutions are spectrally normalised (λ = 1.1 each, so Lip(h) ≤ 1/1.1² ≈ 0.83): the
default Frobenius bound does not bound a convolution's operator norm, and under it the quick-start
model lost its contraction after ~1800 steps of a 2000-step run (Picard iterations 4 → 30, gradient
norm 2e2 → 3e5, loss −2e2 → −4e3; benchmarks/results/ncsn-mnist/deq-frobenius/metrics.jsonl).
"""
from configs.ncsn_twores import get_config as twores_config


def get_config():
    config = twores_config()
    config.deq.layers = "deq_res"
    config.deq.warm_start = False
    config.deq.norm = "spectral"
    config.deq.norm_lambda = 1.1
    return config
