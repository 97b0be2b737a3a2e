"""The config a workdir was started with, kept as WORKDIR/config.json, and the check a resume makes.

The first start of a training run writes its resolved config there. A later start in the same
workdir compares its model, loss, data and DEQ settings (`CHECKED_SECTIONS`) with the stored ones
and refuses to go on when any differ, listing the fields, unless training.allow_config_change is
set; an accepted change is appended to WORKDIR/config_changes.jsonl and becomes the stored config.
Every other section (training, optim, sampling, eval, seed, device) may change freely, e.g. a
longer training.n_iters, other logging or checkpoint frequencies, or new eval.* settings; so may
the fields in `FREE_FIELDS`, which say where the data is or how validation and convergence checks
are run, not what is trained.
"""
from __future__ import annotations

import json
import logging
import os
import pathlib
import time
from typing import Any

from ml_collections import ConfigDict

from score_matching.checkpoint import write_atomically

logger = logging.getLogger("score_matching")
CONFIG_FILE = "config.json"
CHANGES_FILE = "config_changes.jsonl"
CHECKED_SECTIONS = ("model", "deq", "loss", "data")
FREE_FIELDS = frozenset({"data.root", "data.download", "data.max_eval", "deq.val_exact_tol", "deq.check_every",
                         "deq.on_unconverged"})
_ABSENT = "<absent>"


class ConfigMismatchError(ValueError):
    """A resume whose model, DEQ, loss or data settings differ from those the workdir was started with."""


def config_as_dict(config: ConfigDict) -> dict[str, Any]:
    """The config as plain JSON values (tuples become lists), as config.json stores it."""
    return json.loads(config.to_json(sort_keys=True))


def _flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def checked_differences(stored: dict[str, Any], current: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    """{field: (stored value, current value)} over the checked sections, `FREE_FIELDS` excepted."""
    old = _flatten({s: stored.get(s, {}) for s in CHECKED_SECTIONS})
    new = _flatten({s: current.get(s, {}) for s in CHECKED_SECTIONS})
    return {
        field: (old.get(field, _ABSENT), new.get(field, _ABSENT))
        for field in sorted(old.keys() | new.keys())
        if field not in FREE_FIELDS and old.get(field, _ABSENT) != new.get(field, _ABSENT)
    }


def check_workdir_config(config: ConfigDict, workdir: str | os.PathLike) -> dict[str, tuple[Any, Any]]:
    """Compares `config` with WORKDIR/config.json, if there is one; returns the differences to record:
    fields the stored config lacks (added to the code since), and changed fields when
    training.allow_config_change accepts them. Changed fields without it raise ConfigMismatchError."""
    path = pathlib.Path(workdir) / CONFIG_FILE
    if not path.is_file():
        return {}
    try:
        stored = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ConfigMismatchError(f"{path} is not valid JSON ({error}); restore it or start in a new workdir") from None
    differences = checked_differences(stored, config_as_dict(config))
    # A field the stored config lacks was added to the code after the workdir was started; new fields
    # default to the behaviour before them, so they are recorded, not refused.
    changed = {field: values for field, values in differences.items() if values[0] != _ABSENT}
    if changed and not config.training.allow_config_change:
        listed = "; ".join(f"{field}: {old!r} -> {new!r}" for field, (old, new) in changed.items())
        raise ConfigMismatchError(
            f"{pathlib.Path(workdir)} was started with another config; these fields differ (stored -> now): {listed}. "
            "Resume with the stored values, use a new workdir, or pass --config.training.allow_config_change=true "
            "if the change is intended"
        )
    return differences


def store_workdir_config(config: ConfigDict, workdir: str | os.PathLike, accepted: dict[str, tuple[Any, Any]]) -> None:
    """Writes WORKDIR/config.json at a workdir's first start, or after an accepted change (which is
    also appended to WORKDIR/config_changes.jsonl)."""
    path = pathlib.Path(workdir) / CONFIG_FILE
    if path.is_file() and not accepted:
        return
    if accepted:
        logger.warning("config change recorded (fields added since the workdir was started, or accepted by "
                       "training.allow_config_change): %s", {field: list(values) for field, values in accepted.items()})
        record = {"time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                  "changes": {field: list(values) for field, values in accepted.items()}}
        with (pathlib.Path(workdir) / CHANGES_FILE).open("a") as f:
            f.write(json.dumps(record) + "\n")
    text = json.dumps(config_as_dict(config), indent=2, sort_keys=True) + "\n"
    write_atomically(path, lambda f: f.write(text.encode()))
