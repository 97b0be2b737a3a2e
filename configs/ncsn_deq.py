"""DEQ-SSM-VR NCSN on MNIST (paper tables 8(b) and 9): TwoRes with `deq_res` as a DEQ-ResBlock.

Two departures from the paper's DEQ settings, both found by equal-budget runs of this config
(benchmarks/results/ncsn-mnist/, with the training logs of the runs that diverged):
- h's two convolutions are spectrally normalised with λ = 2 each, so Lip(h) ≤ 1/4. The default
  Frobenius bound does not bound a convolution's operator norm; under it the solver lost its
  contraction during training.
- Gradients are exact (`grad=implicit`). With the paper's phantom gradient (K = 2) the SSM-VR loss
  ran away even with the spectral bound, while the implicit run trained like TwoRes.
"""
from configs.ncsn_twores import get_config as twores_config


def get_config():
    config = twores_config()
    config.deq.layers = "deq_res"
    config.deq.warm_start = False
    config.deq.norm = "spectral"
    config.deq.norm_lambda = 2.0
    config.deq.grad = "implicit"
    return config
