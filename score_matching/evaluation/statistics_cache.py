"""Reference feature statistics (μ, Σ) cached on disk, keyed by dataset, feature extractor and count.

A file `<cache dir>/<dataset>--<extractor>--n<count>.npz` holds mu, sigma and the three keys;
the extractor key names the network and the digest of its weights file, so retraining a
classifier or swapping Inception weights never reuses stale statistics.
"""
from __future__ import annotations

import hashlib
import logging
import os
import pathlib
import re
import tempfile
from typing import Callable

import numpy as np

from score_matching.evaluation.frechet import gaussian_statistics

CACHE_DIR_ENV = "SCORE_MATCHING_CACHE"
_KEY = re.compile(r"^[A-Za-z0-9._+-]+$")
logger = logging.getLogger("score_matching")


def resolve_cache_dir(path: str | os.PathLike = "") -> pathlib.Path:
    """`path` when given, else $SCORE_MATCHING_CACHE, else $XDG_CACHE_HOME/deq-score-matching
    (~/.cache/deq-score-matching when XDG_CACHE_HOME is unset)."""
    if str(path):
        return pathlib.Path(path).expanduser()
    if os.environ.get(CACHE_DIR_ENV):
        return pathlib.Path(os.environ[CACHE_DIR_ENV]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or pathlib.Path.home() / ".cache"
    return pathlib.Path(base) / "deq-score-matching"


def file_digest(path: str | os.PathLike, length: int = 12) -> str:
    """The first `length` hex digits of the file's SHA-256."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:length]


def statistics_path(cache_dir: str | os.PathLike, dataset: str, extractor: str, count: int) -> pathlib.Path:
    """Where the statistics of `count` images of `dataset` under `extractor` are cached."""
    for name, key in (("dataset", dataset), ("extractor", extractor)):
        if not _KEY.match(key):
            raise ValueError(f"{name} key {key!r} may only contain letters, digits and . _ + -")
    if not isinstance(count, int) or count < 2:
        raise ValueError(f"count must be an int >= 2, got {count!r}")
    return pathlib.Path(cache_dir) / f"{dataset}--{extractor}--n{count}.npz"


def cached_statistics(
    cache_dir: str | os.PathLike, dataset: str, extractor: str, count: int, features: Callable[[], np.ndarray]
) -> tuple[np.ndarray, np.ndarray]:
    """(μ, Σ) of `features()` (an (count, D) array), read from the cache or computed and written to it."""
    path = statistics_path(cache_dir, dataset, extractor, count)
    if path.is_file():
        logger.info("reference statistics: using the cached %s", path)
        with np.load(path) as stored:
            return stored["mu"], stored["sigma"]
    logger.info("reference statistics: computing those of %d %s images under %s into %s", count, dataset, extractor, path)
    values = features()
    if values.shape[0] != count:
        raise ValueError(f"features() returned {values.shape[0]} rows for a cache entry of count {count}")
    mu, sigma = gaussian_statistics(values)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Written under a temporary name and renamed, so that a reader never sees half a file.
    with tempfile.NamedTemporaryFile(dir=path.parent, suffix=".tmp", delete=False) as tmp:
        np.savez(tmp, mu=mu, sigma=sigma, dataset=dataset, extractor=extractor, count=count)
    os.replace(tmp.name, path)
    logger.info("reference statistics: wrote %s", path)
    return mu, sigma
