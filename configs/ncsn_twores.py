"""TwoRes NCSN on MNIST (paper table 8(b) with the DEQ turned off), sized to draw digits on a 2-core CPU.

The README's quick start trains `configs/ncsn_deq.py`, this model with `deq_res` as a DEQ block, so
these values are its recipe:
- annealed denoising score matching, NCSN's loss for its image models and the cheaper one
  (the paper's annealed SSM-VR: `--config.loss.name=anneal_ssm_vr`);
- NCSN v1's noise levels for MNIST (10 levels, σ 1 → 0.01, the default config's) and NCSN v2's
  noise conditioning (unconditional norms, output divided by σ), under which the score has the
  right scale from the first step instead of learning a 1/σ gain per level;
- SiLU instead of ELU: the same smooth, non-saturating shape, and on CPUs whose ELU kernel is
  scalar (expm1) ELU took about as long as all the convolutions of a training step;
- Adam at 1e-3 (small models tolerate it) with an EMA of rate 0.995, which forgets the initial
  weights within the run (0.999 still carried a visible part of them after a few thousand steps);
- annealed Langevin with 40 steps per level at step_lr 4e-5 (NCSN's 2e-5 in its code's convention,
  see `score_matching.sampling.annealed_langevin_dynamics`), for the grid and the evaluation.
Paper scale and the paper's settings: configs/paper_rows.py ("table5/...": CIFAR-10, ngf 128).
"""
from configs.defaults.ncsn import get_config as family_defaults

TRAINING_STEPS = 4500


def get_config():
    config = family_defaults()
    config.model.name = "ncsn_twores"
    config.model.ngf = 8
    config.model.activation = "silu"
    config.model.conditioning = "sigma"
    config.model.ema_rate = 0.995
    config.loss.name = "anneal_dsm"
    config.optim.lr = 1e-3
    config.data.dataset = "mnist"
    config.data.image_size = 28
    config.training.batch_size = 64
    config.training.n_iters = TRAINING_STEPS
    config.training.log_freq = 100
    config.training.eval_freq = 1000
    config.training.snapshot_freq = TRAINING_STEPS
    config.training.preemption_freq = 250
    config.training.sample_freq = TRAINING_STEPS
    config.sampling.n_samples = 64
    config.sampling.n_steps_each = 40
    config.sampling.step_lr = 4e-5
    config.eval.batch_size = 128
    config.data.max_eval = 512
    # The MNIST classifier FD (not comparable to published FIDs) and the confident share on 256
    # samples drawn with the grid's sampler; the minimum for the FD's 128-d features is 129, and a
    # paper-style evaluation would use 10k samples.
    config.eval.classifier_fd_samples = 256
    config.eval.n_steps_each = 40
    return config
