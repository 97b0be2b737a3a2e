"""Train, evaluate or sample a score model whose chosen layers are DEQ blocks.

    python main.py --config=configs/ncsn_deq.py --workdir=runs/ncsn_deq
    python main.py --config=configs/ncsn_deq.py --workdir=runs/ncsn_deq --mode=eval
    python main.py --config=configs/dkef_deq.py --config.deq.layers=feature --config.deq.solver=anderson --workdir=runs/x
    torchrun --nproc_per_node=2 main.py --config=configs/ncsn_deq.py --workdir=runs/ddp

Every config field, with one line of help, and the DEQ layers the model offers (deq.layers):
    python main.py --config=configs/ncsn_deq.py --mode=show
A mistake is reported in a few lines on stderr (exit status 2); --debug (or SCORE_MATCHING_DEBUG=1)
shows the traceback instead.

This is the only place where the host loop (`score_matching.run`) and the patches meet: the
loop calls `apply_patch` on the freshly built model, `deq_layer_stats` when it logs, and takes its
validation loss inside `exact_derivatives` when config.deq.val_exact_tol > 0.
"""
from __future__ import annotations

import functools
import logging
import os
import pathlib
import shlex
import sys
from typing import Sequence

from absl import app, flags
from ml_collections import ConfigDict, config_flags

from configs.command_line import (
    CommandLineError,
    check_override_fields,
    config_path_from_argv,
    describe_config,
    experiment_configs,
    load_config_file,
)

# torch and the project's packages are imported inside the functions that use them, so that a
# mistake on the command line is reported before they load (a fraction of a second, not several).

MODES = ("train", "eval", "sample", "show")
DEBUG_ENV = "SCORE_MATCHING_DEBUG"
USAGE_EXIT_CODE = 2
HELP_FLAGS = ("--help", "-help", "-h", "-?", "--helpshort", "--helpfull", "--helpxml")
FLAGS = flags.FLAGS
config_flags.DEFINE_config_file(
    "config", None, "Experiment config file (configs/*.py); set its fields with --config.<field>=<value> "
    "and list them all with --mode=show.", lock_config=True)
flags.DEFINE_string("workdir", None, "Working directory for checkpoints, metrics, samples and eval.json.")
flags.DEFINE_enum("mode", "train", list(MODES), "What to run; show = print every config field with its help "
                  "and the DEQ layers the model offers.")
flags.DEFINE_bool("debug", False, f"Show tracebacks instead of one-line errors (or set {DEBUG_ENV}=1).")


def user_errors() -> tuple[type[Exception], ...]:
    """Errors a user fixes by changing the command, the config or the files it names: reported
    without a traceback."""
    from score_matching.datasets import MNISTUnavailableError
    from score_matching.run import WorkdirNotWritableError

    return CommandLineError, FileNotFoundError, MNISTUnavailableError, WorkdirNotWritableError


def model_transform_for(config: ConfigDict):
    """The hook that turns the layers named in config.deq into DEQ blocks."""
    from patches import apply_patch

    def transform(model, example_inputs):
        try:
            return apply_patch(model, config.model.name, config.deq, example_inputs)
        except ValueError as error:  # a deq.layers or deq.per_layer that this model does not offer
            raise CommandLineError(f"config.deq: {error}") from error

    return transform


def validation_context_for(config: ConfigDict):
    """With config.deq.val_exact_tol > 0, the context that gives DEQ layers exact derivatives during
    validation; else None."""
    from deq_plugin import exact_derivatives

    if config.deq.val_exact_tol <= 0:
        return None
    return functools.partial(exact_derivatives, tol=config.deq.val_exact_tol)


class _LayersOffered(Exception):
    """Carries the DEQ layer names out of task building, which `offered_layers` stops there."""


def offered_layers(config: ConfigDict) -> list[str]:
    """The layer names the patch of config.model.name offers for deq.layers (builds the host model,
    which needs its data, and stops before anything else)."""
    import torch

    from patches import swappable_layers
    from score_matching.tasks import build_task

    def capture(model, example_inputs):
        raise _LayersOffered(list(swappable_layers(model, config.model.name)))

    try:
        build_task(config, torch.device("cpu"), capture)
    except _LayersOffered as offered:
        return offered.args[0]
    raise RuntimeError(f"the {config.model.name!r} task never handed its model to the patch hook")


def show(config: ConfigDict) -> None:
    """Prints the resolved config with its help and the DEQ layers its model offers."""
    from score_matching.datasets import MNISTUnavailableError

    try:
        layers, note = offered_layers(config), ""
    except (FileNotFoundError, MNISTUnavailableError) as error:
        first_line = str(error).splitlines()[0].removesuffix("; looked for:")
        layers, note = None, f"the model is built from its data, which is missing: {first_line}"
    print(describe_config(config, layers, note))


def train_command(workdir: str) -> str:
    """The command line of this run with --mode=train: what makes the missing checkpoint."""
    args, skip_value = [], False
    for arg in sys.argv[1:]:
        if not skip_value and not arg.startswith("--mode"):
            args.append(arg)
        skip_value = arg == "--mode"  # '--mode eval': its value is the next argument
    if not any(a.startswith("--workdir") for a in args):
        args.append(f"--workdir={workdir}")
    return shlex.join(["python", "main.py", *args])


def check_checkpoint(config: ConfigDict, workdir: str) -> None:
    """Raises CommandLineError, saying how to train one, when the checkpoint to evaluate is missing."""
    from score_matching.run import checkpoint_path

    path = checkpoint_path(pathlib.Path(workdir), str(config.eval.checkpoint))
    if not path.is_file():
        raise CommandLineError(
            f"no checkpoint at {path} (eval.checkpoint={config.eval.checkpoint!r})\n"
            f"  train first with: {train_command(workdir)}"
        )


def parse_flags(argv: list[str]) -> list[str]:
    """absl's flag parsing, preceded by the checks absl reports with tracebacks (config file, field
    names) and followed by the required flags; every mistake is a CommandLineError."""
    args = argv[1:]
    if not any(arg.split("=")[0] in HELP_FLAGS for arg in args):
        config_path = config_path_from_argv(args)
        if config_path is None:
            raise CommandLineError(
                "--config is required, e.g. --config=configs/ncsn_deq.py\n"
                f"  experiment configs: {', '.join(experiment_configs())}"
            )
        check_override_fields(load_config_file(config_path), args, config_path)
    try:
        remaining = FLAGS(argv)
    except flags.Error as error:
        raise CommandLineError(f"{error}\n  see: python main.py --help") from error
    except (AttributeError, KeyError, TypeError, ValueError) as error:
        raise CommandLineError(f"bad --config value: {error}") from error
    if len(remaining) > 1:
        raise CommandLineError(f"unexpected arguments {remaining[1:]}; every option is a --flag=value")
    if FLAGS.mode != "show" and not FLAGS.workdir:
        raise CommandLineError(
            f"--workdir is required for --mode={FLAGS.mode}, e.g. "
            f"python main.py --config={config_path_from_argv(args)} --workdir=runs/my_run"
        )
    return remaining


def main(argv: list[str]) -> None:
    """Runs FLAGS.mode on FLAGS.config after checking the config's values."""
    from configs.validate import validate_config
    from patches import deq_layer_stats
    from score_matching import run

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    config = FLAGS.config
    try:
        validate_config(config)
    except ValueError as error:
        raise CommandLineError(
            f"{error}\n  every field with its help: "
            f"python main.py --config={config_flags.get_config_filename(FLAGS['config'])} --mode=show"
        ) from error
    if FLAGS.mode == "show":
        show(config)
        return
    transform = model_transform_for(config)
    if FLAGS.mode == "train":
        run.train(config, FLAGS.workdir, transform, deq_layer_stats, validation_context_for(config))
        return
    check_checkpoint(config, FLAGS.workdir)
    if FLAGS.mode == "eval":
        run.evaluate(config, FLAGS.workdir, transform, deq_layer_stats)
    else:
        run.sample(config, FLAGS.workdir, transform)


def debug_requested(argv: Sequence[str]) -> bool:
    """Whether --debug is on the command line or SCORE_MATCHING_DEBUG is set (checked before absl parses)."""
    on_command_line = any(arg in ("--debug", "--debug=true", "--debug=True", "--debug=1") for arg in argv)
    return on_command_line or os.environ.get(DEBUG_ENV, "") not in ("", "0")


def cli() -> None:
    """app.run(main) with `user_errors()` printed as 'error: ...' on stderr and exit status 2 (unless --debug)."""
    try:
        app.run(main, flags_parser=parse_flags)
    except Exception as error:
        # CommandLineError first: a flag mistake is reported without importing torch.
        if debug_requested(sys.argv) or not (isinstance(error, CommandLineError) or isinstance(error, user_errors())):
            raise
        print(f"error: {error}", file=sys.stderr)
        print(f"  (--debug or {DEBUG_ENV}=1 shows the traceback)", file=sys.stderr)
        sys.exit(USAGE_EXIT_CODE)


if __name__ == "__main__":
    cli()
