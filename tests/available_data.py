"""Which real data sets the tests can use: the data root found as the program finds it, checked per data set.

A test that needs a data set calls `require_dataset(name)` (or takes the `mnist_root` / `uci_root`
fixture) and is skipped, naming that data set, when it is missing; it never fails for data the user
does not have.
"""
from __future__ import annotations

import pathlib

import pytest

from score_matching.datasets import MNIST_FILES, UCI_NAMES, find_mnist_file, find_uci_file, resolve_data_root


def data_root_or_skip() -> pathlib.Path:
    """The data root as the program resolves it ($SCORE_MATCHING_DATA, else ./data); skips if it is absent."""
    root = resolve_data_root(None)
    if not root.is_dir():
        pytest.skip(f"no data root: {root.resolve()} does not exist (set SCORE_MATCHING_DATA or fill ./data)")
    return root


def missing_dataset(name: str) -> str:
    """Why data set `name` (MNIST or a UCI set; others need no files) is not usable under the data
    root, or '' when it is."""
    root = resolve_data_root(None)
    try:
        if name == "mnist":
            for key in MNIST_FILES:
                find_mnist_file(root, key)
        elif name in UCI_NAMES:
            find_uci_file(name, root)
    except FileNotFoundError as error:
        return f"data set {name!r} missing: {str(error).splitlines()[0].removesuffix('; looked for:')}"
    return ""


def require_dataset(*names: str) -> pathlib.Path:
    """The data root holding every data set in `names`; skips the test, naming each missing data set
    and its file, when one is not there."""
    if any(name == "mnist" or name in UCI_NAMES for name in names):
        data_root_or_skip()
    reasons = [reason for reason in map(missing_dataset, names) if reason]
    if reasons:
        pytest.skip("; ".join(reasons))
    return resolve_data_root(None)
