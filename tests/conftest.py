"""Shared test setup: the data root is found as the program finds it ($SCORE_MATCHING_DATA, else ./data),
with ../shared/data preferred when it exists and the variable is unset; tests skip per missing data set."""
import os
import pathlib

import pytest
import torch

from available_data import require_dataset

_SHARED_DATA = pathlib.Path(__file__).resolve().parents[1].parent / "shared" / "data"
if _SHARED_DATA.is_dir():
    os.environ.setdefault("SCORE_MATCHING_DATA", str(_SHARED_DATA))

torch.set_num_threads(2)


@pytest.fixture
def mnist_root() -> pathlib.Path:
    """The data root holding MNIST; tests that need it are skipped, naming MNIST, when it is missing."""
    return require_dataset("mnist")


@pytest.fixture
def uci_root() -> pathlib.Path:
    """The data root holding the three UCI sets; tests that need them are skipped, naming the missing ones."""
    return require_dataset("parkinsons", "redwine", "whitewine")
