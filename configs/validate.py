"""Checks every choice field of a config before any work starts, naming the valid choices."""
from __future__ import annotations

import importlib

from ml_collections import ConfigDict

from deq_plugin import GRAD_MODES, NORMS, SOLVERS


def _choice(field: str, value, valid) -> None:
    if value not in valid:
        raise ValueError(f"config.{field}={value!r} is not valid; choose one of {sorted(valid)}")


def validate_config(config: ConfigDict) -> None:
    """Raises ValueError for the first field whose value is not one of its valid choices."""
    models = importlib.import_module("score_matching.models")
    for module in ("score_matching.models.ncsn", "score_matching.models.dkef", "score_matching.models.nice"):
        importlib.import_module(module)
    losses = importlib.import_module("score_matching.losses")
    datasets = importlib.import_module("score_matching.datasets")
    tasks = importlib.import_module("score_matching.tasks")
    for module in tasks.TASK_MODULES:
        importlib.import_module(module)
    _choice("device", config.device, ("auto", "cpu", "cuda"))
    _choice("model.name", config.model.name, set(models.MODELS.names()) & set(tasks.TASKS.names()))
    _choice("model.conditioning", config.model.conditioning, ("cin++", "sigma"))
    _choice("model.stack_init", config.model.stack_init, importlib.import_module("score_matching.models.mlp").STACK_INITS)
    _choice("loss.name", config.loss.name, losses.LOSSES.names())
    _choice("loss.projection", config.loss.projection, ("rademacher", "gaussian", "sphere"))
    _choice("loss.trace", config.loss.trace, ("batched", "loop"))
    _choice("data.dataset", config.data.dataset, datasets.DATASETS.names())
    _choice("data.protocol", config.data.protocol, datasets.PROTOCOLS)
    _choice("data.gaussian", config.data.gaussian, datasets.GAUSSIAN_DISTRIBUTIONS)
    _choice("data.nice_preprocessing", config.data.nice_preprocessing, datasets.NICE_PREPROCESSINGS)
    _choice("optim.optimizer", config.optim.optimizer, ("adam", "adamw"))
    _choice("deq.solver", config.deq.solver, SOLVERS.names())
    _choice("deq.grad", config.deq.grad, GRAD_MODES)
    _choice("deq.norm", config.deq.norm, NORMS)
    _choice("eval.is_proposal", config.eval.is_proposal, importlib.import_module("score_matching.models.dkef_normaliser").IS_PROPOSALS)
    for field in ("training.batch_size", "training.n_iters", "training.log_freq", "training.snapshot_freq", "training.preemption_freq",
                  "eval.is_kde_centres"):
        section, key = field.split(".")
        if config[section][key] < 1:
            raise ValueError(f"config.{field}={config[section][key]!r} must be >= 1")
    for field in ("data.max_train", "data.max_eval", "eval.sm_loss_rows", "training.eval_freq", "training.val_freq",
                  "training.patience"):
        section, key = field.split(".")
        if config[section][key] < 0:
            raise ValueError(f"config.{field}={config[section][key]!r} must be >= 0 (0 = off / all rows)")
    if config.training.patience > 0 and config.training.val_freq == 0:
        raise ValueError(
            f"config.training.patience={config.training.patience} stops on the validation loss, which is "
            "never taken with training.val_freq=0; set training.val_freq > 0"
        )
    checkpoint = str(config.eval.checkpoint)
    if checkpoint not in ("latest", "best") and not checkpoint.isdigit():
        raise ValueError(f"config.eval.checkpoint={checkpoint!r} must be 'latest', 'best' or a step number")
