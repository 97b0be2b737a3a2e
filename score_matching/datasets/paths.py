"""Where data lives: the data-root setting and file look-ups that say everywhere they looked."""
from __future__ import annotations

import os
import pathlib
from typing import Callable, Sequence

DATA_ROOT_ENV = "SCORE_MATCHING_DATA"


def resolve_data_root(root: str | os.PathLike | None, fallback: str = "data") -> pathlib.Path:
    """The data root: `root` when given, else `$SCORE_MATCHING_DATA` when set, else `./<fallback>`.

    Nothing is checked for existence here; the loaders report missing files themselves.
    """
    if root is not None and str(root) != "":
        return pathlib.Path(root).expanduser()
    from_env = os.environ.get(DATA_ROOT_ENV, "")
    if from_env:
        return pathlib.Path(from_env).expanduser()
    return pathlib.Path(fallback)


def _find(
    root: pathlib.Path, candidates: Sequence[str], exists: Callable[[pathlib.Path], bool], what: str, hint: str
) -> pathlib.Path:
    if not candidates:
        raise ValueError(f"no candidate paths given for {what}")
    looked = [root / candidate for candidate in candidates]
    for path in looked:
        if exists(path):
            return path
    listing = "\n".join(f"  - {path.resolve()}" for path in looked)
    message = f"{what} not found under data root {root.resolve()}; looked for:\n{listing}"
    if hint:
        message += f"\n{hint}"
    message += f"\n(The data root is the `root` argument, else ${DATA_ROOT_ENV}, else ./data.)"
    raise FileNotFoundError(message)


def find_file(root: str | os.PathLike, candidates: Sequence[str], what: str, hint: str = "") -> pathlib.Path:
    """The first of `candidates` (paths relative to `root`) that is a file.

    Raises FileNotFoundError listing every path tried, followed by `hint` (how to provide the data).
    """
    return _find(pathlib.Path(root), candidates, pathlib.Path.is_file, what, hint)


def find_dir(root: str | os.PathLike, candidates: Sequence[str], what: str, hint: str = "") -> pathlib.Path:
    """The first of `candidates` (paths relative to `root`) that is a directory; errors as `find_file` does."""
    return _find(pathlib.Path(root), candidates, pathlib.Path.is_dir, what, hint)
