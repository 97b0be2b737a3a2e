"""DEQ NCSN on MNIST (paper tables 8(b) and 9): TwoRes with `deq_res` as a DEQ-ResBlock.

The README's quick start: it trains with the CPU recipe of `configs/ncsn_twores.py` (annealed DSM,
NCSN v2's noise conditioning, SiLU) and draws digits. The paper's DEQ-SSM-VR NCSN is the row
"table5/DEQ-SSM-VR NCSN" of configs/paper_rows.py.

Two departures from the paper's DEQ settings, both from 2000-step SSM-VR runs of this config
(benchmarks/results/ncsn-mnist/, metrics of every run kept):
- h's two convolutions are spectrally normalised with λ = 2 each, so Lip(h) ≤ 1/4. The default
  Frobenius bound does not bound a convolution's operator norm; under it the contraction was lost
  after ~1800 steps (Picard iterations 4 → 30, gradient norm 2e2 → 3e5, loss −2e2 → −4e3).
- Gradients are exact (`grad=implicit`). With the paper's phantom gradient (K = 2) the SSM-VR
  loss ran away even so: by step 300 at spectral λ = 1.1 and by step ~1000 at λ = 2 (gradient
  norm 2e2 → 6e4, Picard iterations steady at 6), while the implicit run trained like TwoRes.
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
