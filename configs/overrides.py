"""Applies dotted-path overrides ("seed", "deq.tol", ...) to a config, as `--config.<field>=` does."""
from __future__ import annotations

from typing import Any, Mapping

from ml_collections import ConfigDict


def apply_overrides(config: ConfigDict, overrides: Mapping[str, Any]) -> ConfigDict:
    """Sets each dotted field of `overrides` on `config` (in place) and returns it.

    A field that the config does not have is a KeyError naming it and the valid keys at that level,
    so a typo cannot add a new, unused field.
    """
    for dotted, value in overrides.items():
        *sections, key = dotted.split(".")
        node = config
        for depth, name in enumerate([*sections, key]):
            where = ".".join(sections[:depth]) or "config"
            if not isinstance(node, ConfigDict):
                raise KeyError(f"override {dotted!r}: {where} is a value, not a section")
            if name not in node:
                raise KeyError(f"override {dotted!r}: {where} has no field {name!r}; valid: {sorted(node)}")
            if depth < len(sections):
                node = node[name]
        node[key] = value
    return config
