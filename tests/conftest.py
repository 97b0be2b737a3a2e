"""Shared test setup: point the data root at ../shared/data when it exists."""
import os
import pathlib

import pytest
import torch

_SHARED_DATA = pathlib.Path(__file__).resolve().parents[1].parent / "shared" / "data"
if _SHARED_DATA.is_dir():
    os.environ.setdefault("SCORE_MATCHING_DATA", str(_SHARED_DATA))

torch.set_num_threads(2)


@pytest.fixture
def data_root() -> pathlib.Path:
    """The real-data root; tests that need it are skipped when it is absent."""
    root = os.environ.get("SCORE_MATCHING_DATA")
    if not root or not pathlib.Path(root).is_dir():
        pytest.skip("no data root: set SCORE_MATCHING_DATA or provide ../shared/data")
    return pathlib.Path(root)
