"""Tiny, CPU-sized versions of the experiment configs, and an in-process training run.

Regenerate the golden baseline losses (only on purpose, after a change that is meant to alter
them) with:  SCORE_MATCHING_DATA=<data root> python tests/tiny_runs.py --regenerate
"""
from __future__ import annotations

import importlib
import json
import pathlib
import sys

import ml_collections

from available_data import require_dataset
from configs.overrides import apply_overrides

GOLDEN = pathlib.Path(__file__).parent / "golden" / "baseline_losses.json"
BASELINES = ("ncsn_baseline", "ncsn_twores", "dkef_baseline", "nice_baseline", "vae_baseline")
_TINY = {
    "ncsn": {"model.ngf": 4, "model.num_scales": 3, "training.batch_size": 4, "data.max_train": 64,
             "data.max_eval": 8, "eval.batch_size": 8, "sampling.n_samples": 4, "sampling.n_steps_each": 1,
             "eval.classifier_fd_samples": 0},
    "dkef": {"model.n_inducing": 8, "model.hidden": 8, "model.latent": 8, "training.batch_size": 8,
             "data.max_train": 64, "data.max_eval": 16, "eval.batch_size": 16, "eval.is_samples": 2000},
    "nice": {"model.hidden": 16, "model.depth": 2, "training.batch_size": 8, "data.max_train": 64,
             "data.max_eval": 16, "eval.batch_size": 16},
    "vae": {"model.vae_width": 2, "model.z_dim": 4, "model.noise_dim": 4, "training.batch_size": 4,
            "data.max_train": 64, "data.max_eval": 8, "eval.batch_size": 8, "eval.entropy_samples": 8,
            "sampling.n_samples": 4, "eval.classifier_fd_samples": 0},
}
_RUN = {"training.n_iters": 3, "training.log_freq": 1, "training.eval_freq": 0, "training.sample_freq": 0,
        "training.snapshot_freq": 1000, "training.preemption_freq": 1, "device": "cpu"}


def tiny_config(name: str, **overrides) -> ml_collections.ConfigDict:
    """configs/<name>.py shrunk to run in seconds on a CPU; `overrides` use '__' for '.'. The calling
    test is skipped, naming the data set, when the config's data set is missing."""
    config = importlib.import_module(f"configs.{name}").get_config()
    family = name.split("_")[0]
    merged = {**_TINY[family], **_RUN, **{k.replace("__", "."): v for k, v in overrides.items()}}
    config = apply_overrides(config, merged)
    require_dataset(config.data.dataset)
    return config


def train_losses(config: ml_collections.ConfigDict, workdir: pathlib.Path) -> list[float]:
    """Trains in-process (as main.py would) and returns the logged losses."""
    from main import model_transform_for
    from patches import deq_layer_stats
    from score_matching import run

    run.train(config, str(workdir), model_transform_for(config), deq_layer_stats)
    lines = (workdir / "metrics.jsonl").read_text().splitlines()
    return [json.loads(line)["loss"] for line in lines if "loss" in json.loads(line)]


if __name__ == "__main__":
    import tempfile

    if sys.argv[1:] != ["--regenerate"]:
        sys.exit("usage: python tests/tiny_runs.py --regenerate")
    golden = {}
    for name in BASELINES:
        with tempfile.TemporaryDirectory() as tmp:
            golden[name] = train_losses(tiny_config(name), pathlib.Path(tmp))
    GOLDEN.write_text(json.dumps(golden, indent=2) + "\n")
    print(f"wrote {GOLDEN}")
