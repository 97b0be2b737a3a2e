"""DEQ NCSN on MNIST (paper tables 8(b) and 9): TwoRes with `deq_res` as a DEQ-ResBlock.

The README's quick start: it trains with the CPU recipe of `configs/ncsn_twores.py` (annealed DSM,
NCSN v2's noise conditioning, SiLU) and draws digits. The paper's DEQ-SSM-VR NCSN is the row
"table5/DEQ-SSM-VR NCSN" of configs/paper_rows.py.

Two departures from the paper's DEQ settings, both found by equal-budget SSM-VR runs of this config
(benchmarks/results/ncsn-mnist/ssm-vr-2000-steps/, the training logs of the runs that diverged):
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
