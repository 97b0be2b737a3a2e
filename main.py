"""Entry point: train, evaluate or sample a score model whose chosen layers are DEQ blocks.

    python main.py --config=configs/ncsn_deq.py --workdir=runs/ncsn_deq
    python main.py --config=configs/ncsn_deq.py --workdir=runs/ncsn_deq --mode=eval
    python main.py --config=configs/dkef_deq.py --config.deq.layers=feature --config.deq.solver=anderson --workdir=runs/x
    torchrun --nproc_per_node=2 main.py --config=configs/ncsn_deq.py --workdir=runs/ddp

This is the only place where the host loop (`score_matching.run`) and the patches meet: the
loop calls `apply_patch` on the freshly built model, `deq_layer_stats` when it logs, and takes its
validation loss inside `exact_derivatives` when config.deq.val_exact_tol > 0.
"""
from __future__ import annotations

import functools
import logging

from absl import app, flags
from ml_collections import ConfigDict, config_flags

from configs.validate import validate_config
from deq_plugin import exact_derivatives
from patches import apply_patch, deq_layer_stats
from score_matching import run

MODES = ("train", "eval", "sample")
FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Experiment config file (configs/*.py).", lock_config=True)
flags.DEFINE_string("workdir", None, "Working directory for checkpoints, metrics, samples and eval.json.")
flags.DEFINE_enum("mode", "train", list(MODES), "What to run.")
flags.mark_flags_as_required(["config", "workdir"])


def model_transform_for(config: ConfigDict):
    """The hook that turns the layers named in config.deq into DEQ blocks."""

    def transform(model, example_inputs):
        return apply_patch(model, config.model.name, config.deq, example_inputs)

    return transform


def validation_context_for(config: ConfigDict):
    """With config.deq.val_exact_tol > 0, the context that gives DEQ layers exact derivatives during
    validation; else None."""
    if config.deq.val_exact_tol <= 0:
        return None
    return functools.partial(exact_derivatives, tol=config.deq.val_exact_tol)


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    config = FLAGS.config
    validate_config(config)
    transform = model_transform_for(config)
    if FLAGS.mode == "train":
        run.train(config, FLAGS.workdir, transform, deq_layer_stats, validation_context_for(config))
    elif FLAGS.mode == "eval":
        run.evaluate(config, FLAGS.workdir, transform, deq_layer_stats)
    else:
        run.sample(config, FLAGS.workdir, transform)


if __name__ == "__main__":
    app.run(main)
