"""Atomic, strict checkpoints: a killed run loses nothing and resumes where it stopped."""
from __future__ import annotations

import os
import pathlib
import random
import tempfile
from typing import Any

import numpy as np
import torch


def save_checkpoint(path: str | os.PathLike, state: dict[str, Any]) -> None:
    """Writes `state` to a temporary file in the same folder, then renames it over `path`."""
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Reads a checkpoint written by `save_checkpoint`; a missing file is an error naming it."""
    path = pathlib.Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    return torch.load(path, map_location=map_location, weights_only=False)


def load_state_strict(module: torch.nn.Module, state_dict: dict[str, Any], what: str) -> None:
    """load_state_dict with an error that lists every missing and unexpected key.

    The lists are torch's after each module's own loading hook, so a module may accept a state
    dict without an optional buffer (e.g. a spectral norm's estimate, rebuilt on use). On a
    mismatch the matching entries may already be loaded; the caller should not go on with it.
    """
    result = module.load_state_dict(state_dict, strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise KeyError(
            f"{what}: checkpoint does not match the model; missing keys {result.missing_keys}, "
            f"unexpected keys {result.unexpected_keys}"
        )


def rng_state() -> dict[str, Any]:
    """Every random generator the training step uses, for an exact resume."""
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restores the generators saved by `rng_state`."""
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
