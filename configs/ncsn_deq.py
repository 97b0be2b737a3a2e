"""DEQ-SSM-VR NCSN on MNIST (paper tables 8(b) and 9): TwoRes with `deq_res` as a DEQ-ResBlock.

h's two convolutions are spectrally normalised with λ = 2 each, so Lip(h) ≤ 1/4 and the phantom
gradient with K = 2 stays accurate. Looser settings diverged in 2000-step runs of this config
(benchmarks/results/ncsn-mnist/): the default Frobenius bound, which does not bound a convolution's
operator norm, lost the contraction after ~1800 steps (Picard iterations 4 → 30, gradient norm
2e2 → 3e5, loss −2e2 → −4e3); spectral λ = 1.1 (Lip ≤ 0.83) by step 300 (iterations 6 → 15,
gradient norm 1e5): the SSM-VR loss exploits the phantom derivatives' error at slow contraction.
"""
from configs.ncsn_twores import get_config as twores_config


def get_config():
    config = twores_config()
    config.deq.layers = "deq_res"
    config.deq.warm_start = False
    config.deq.norm = "spectral"
    config.deq.norm_lambda = 2.0
    return config
