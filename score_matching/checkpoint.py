"""Atomic, strict, safe checkpoints: a killed run loses nothing and resumes where it stopped, and
loading a checkpoint never runs code (tensors and plain Python containers only)."""
from __future__ import annotations

import logging
import os
import pathlib
import pickle
import random
import re
import tempfile
from typing import IO, Any, Callable

import numpy as np
import torch

logger = logging.getLogger("score_matching")
# write_atomically's temporary files: '<name>.<8 random characters>.tmp' (tempfile.mkstemp) next to `name`.
_TEMPORARY = re.compile(r".+\.[a-z0-9_]{8}\.tmp")
_SNAPSHOT = re.compile(r"checkpoint_(\d+)\.pth")
# Checkpoints written before the RNG state was saved as tensors hold numpy's state as a uint32
# array; the weights-only loader may rebuild exactly that (an array of plain numbers) and no more.
_NUMPY_ARRAY_GLOBALS = [np.zeros(1, np.uint32).__reduce__()[0], np.ndarray, np.dtype, type(np.dtype(np.uint32))]


class UnreadableCheckpointError(RuntimeError):
    """A checkpoint file that cannot be loaded (corrupt, truncated, or holding more than plain data)."""


def write_atomically(path: str | os.PathLike, write: Callable[[IO[bytes]], None]) -> None:
    """Calls `write` on a temporary file in `path`'s folder, syncs it, then renames it over `path`:
    readers see the old file or the new one, never a partial one."""
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def save_checkpoint(path: str | os.PathLike, state: dict[str, Any]) -> None:
    """Writes `state` atomically (`write_atomically`)."""
    write_atomically(path, lambda f: torch.save(state, f))


def _load_failure(error: Exception) -> str:
    """Why torch could not read a checkpoint, in one line."""
    text = str(error)
    unsafe = re.search(r"Unsupported global: GLOBAL (\S+)", text)
    if unsafe:
        return f"it asks to import {unsafe.group(1)}, which a checkpoint of tensors never does; refused without running it"
    detail = re.search(r"WeightsUnpickler error: \s*(.+)", text)
    reason = (detail.group(1) if detail else text).strip().splitlines()[0] if text.strip() else type(error).__name__
    return f"corrupt or truncated ({reason})"


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Reads a checkpoint written by `save_checkpoint` with torch's weights-only unpickler, which
    builds tensors and plain containers and runs no code. A missing file is a FileNotFoundError and
    an unreadable one an UnreadableCheckpointError, each naming the file."""
    path = pathlib.Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    try:
        with torch.serialization.safe_globals(_NUMPY_ARRAY_GLOBALS):
            state = torch.load(path, map_location=map_location, weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, ValueError, EOFError, OSError) as error:
        raise UnreadableCheckpointError(f"cannot load checkpoint {path}: {_load_failure(error)}") from error
    if not isinstance(state, dict):
        raise UnreadableCheckpointError(f"cannot load checkpoint {path}: it holds a {type(state).__name__}, not a dict")
    return state


def remove_stale_temporaries(folder: str | os.PathLike) -> list[pathlib.Path]:
    """Deletes the temporary files that killed `write_atomically` calls left in `folder`; returns them."""
    stale = sorted(p for p in pathlib.Path(folder).glob("*.tmp") if _TEMPORARY.fullmatch(p.name))
    for path in stale:
        path.unlink(missing_ok=True)
        logger.info("removed %s, left by an interrupted checkpoint write", path)
    return stale


def newest_readable_snapshot(
    folder: str | os.PathLike, map_location: str | torch.device = "cpu"
) -> tuple[pathlib.Path, dict[str, Any]] | None:
    """The newest `checkpoint_<step>.pth` in `folder` that loads, with its state; None if none does."""
    snapshots = [(int(m.group(1)), p) for p in pathlib.Path(folder).glob("checkpoint_*.pth")
                 if (m := _SNAPSHOT.fullmatch(p.name))]
    for _, path in sorted(snapshots, reverse=True):
        try:
            return path, load_checkpoint(path, map_location=map_location)
        except UnreadableCheckpointError as error:
            logger.warning("%s", error)
    return None


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
    """Every random generator the training step uses, for an exact resume, as tensors and plain
    Python values (so that the weights-only loader reads it back)."""
    kind, keys, position, has_gauss, cached_gaussian = np.random.get_state()
    version, python_state, python_gauss = random.getstate()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "position": int(position),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached_gaussian)},
        "python": {"version": version, "state": torch.tensor(python_state, dtype=torch.int64), "gauss": python_gauss},
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restores the generators saved by `rng_state` (or, in older checkpoints, saved as numpy's and
    Python's own state tuples)."""
    torch.set_rng_state(state["torch"])
    numpy_state, python_state = state["numpy"], state["python"]
    if isinstance(numpy_state, dict):
        numpy_state = (numpy_state["kind"], numpy_state["keys"].numpy().astype(np.uint32), numpy_state["position"],
                       numpy_state["has_gauss"], numpy_state["cached_gaussian"])
    if isinstance(python_state, dict):
        python_state = (python_state["version"], tuple(python_state["state"].tolist()), python_state["gauss"])
    np.random.set_state(numpy_state)
    random.setstate(tuple(python_state))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
