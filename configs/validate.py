"""Checks every choice field of a config before any work starts, naming the valid choices."""
from __future__ import annotations

from ml_collections import ConfigDict

from deq_plugin import GRAD_MODES, NORMS, SOLVERS
from deq_plugin.swap import UNCONVERGED_MODES
from score_matching import datasets
from score_matching.losses import LOSSES, PROJECTIONS, TRACE_METHODS
from score_matching.models import MODELS
from score_matching.models.dkef_normaliser import IS_PROPOSALS
from score_matching.models.mlp import LINEAR_INITS, STACK_INITS
from score_matching.models.ncsn import CONDITIONINGS
from score_matching.optim import OPTIMIZERS
from score_matching.run import DEVICES
from score_matching.tasks import TASKS


def _choice(field: str, value, valid) -> None:
    if value not in valid:
        raise ValueError(f"config.{field}={value!r} is not valid; choose one of {sorted(valid)}")


def choice_fields() -> dict[str, list[str]]:
    """Every choice field's valid values, taken from the registries and option lists that use them."""
    return {
        "device": list(DEVICES),
        "model.name": sorted(set(MODELS.names()) & set(TASKS.names())),
        "model.conditioning": list(CONDITIONINGS),
        "model.stack_init": list(STACK_INITS),
        "model.feature_init": list(LINEAR_INITS),
        "loss.name": LOSSES.names(),
        "loss.projection": list(PROJECTIONS),
        "loss.trace": list(TRACE_METHODS),
        "data.dataset": datasets.DATASETS.names(),
        "data.protocol": list(datasets.PROTOCOLS),
        "data.gaussian": list(datasets.GAUSSIAN_DISTRIBUTIONS),
        "data.nice_preprocessing": list(datasets.NICE_PREPROCESSINGS),
        "optim.optimizer": list(OPTIMIZERS),
        "deq.solver": SOLVERS.names(),
        "deq.grad": list(GRAD_MODES),
        "deq.norm": list(NORMS),
        "deq.on_unconverged": list(UNCONVERGED_MODES),
        "eval.is_proposal": list(IS_PROPOSALS),
    }


def validate_config(config: ConfigDict) -> None:
    """Raises ValueError for the first field whose value is not one of its valid choices (a field
    that the config does not have, such as another model's, is skipped)."""
    for field, valid in choice_fields().items():
        section, _, key = field.rpartition(".")
        node = config[section] if section else config
        if key in node:
            _choice(field, node[key], valid)
    for field in ("training.batch_size", "training.n_iters", "training.log_freq", "training.snapshot_freq", "training.preemption_freq",
                  "eval.is_kde_centres"):
        section, key = field.split(".")
        if key in config[section] and config[section][key] < 1:
            raise ValueError(f"config.{field}={config[section][key]!r} must be >= 1")
    for field in ("data.max_train", "data.max_eval", "eval.sm_loss_rows", "training.eval_freq", "training.val_freq",
                  "training.patience"):
        section, key = field.split(".")
        if key in config[section] and config[section][key] < 0:
            raise ValueError(f"config.{field}={config[section][key]!r} must be >= 0 (0 = off / all rows)")
    if config.training.patience > 0 and config.training.val_freq == 0:
        raise ValueError(
            f"config.training.patience={config.training.patience} stops on the validation loss, which is "
            "never taken with training.val_freq=0; set training.val_freq > 0"
        )
    blocks = config.model.get("deq_res_blocks", 1)
    deq_layers = [name.strip() for name in str(config.deq.layers).split(",")]
    if blocks != 1 and config.model.name != "ncsn_twores":
        raise ValueError(f"config.model.deq_res_blocks={blocks!r} applies to ncsn_twores only; "
                         f"config.model.name={config.model.name!r} takes 1")
    if blocks != 1 and ("deq_res" in deq_layers or "all" in deq_layers):
        raise ValueError(f"config.model.deq_res_blocks={blocks!r} builds the explicit deep twin; with deq_res "
                         f"a DEQ layer (config.deq.layers={config.deq.layers!r}) it must be 1")
    checkpoint = str(config.eval.checkpoint)
    if checkpoint not in ("latest", "best") and not checkpoint.isdigit():
        raise ValueError(f"config.eval.checkpoint={checkpoint!r} must be 'latest', 'best' or a step number")
