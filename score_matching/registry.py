"""The one name -> object registry of the host: models, tasks, losses, datasets, patches, suites.

Entries register themselves with the `register(name)` decorator, usually when their module is
imported; a registry built with `modules=` imports those modules on its first look-up, so a caller
never has to import them by hand. It behaves as the plugin's own copy (`deq_plugin.registry.Table`,
kept separate because the plugin imports nothing from the host): a duplicate name is a KeyError, an
unknown one a ValueError listing the valid names.
"""
from __future__ import annotations

import importlib
from typing import Callable, Generic, Iterator, Sequence, TypeVar

T = TypeVar("T")


class Registry(Generic[T]):
    """Maps names to registered objects; registering a name twice is an error."""

    def __init__(self, kind: str, modules: Sequence[str] = ()) -> None:
        self.kind = kind
        self._modules = tuple(modules)
        self._loaded = not self._modules
        self._entries: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator that registers its target under `name`."""

        def decorator(obj: T) -> T:
            if name in self._entries:
                raise KeyError(f"{self.kind} {name!r} is already registered")
            self._entries[name] = obj
            return obj

        return decorator

    def _load(self) -> None:
        """Imports the modules whose import registers this registry's entries (once)."""
        if not self._loaded:
            self._loaded = True
            for module in self._modules:
                importlib.import_module(module)

    def get(self, name: str) -> T:
        """The object registered as `name`; an unknown name is a ValueError listing the valid ones."""
        self._load()
        if name not in self._entries:
            raise ValueError(f"unknown {self.kind} {name!r}; valid: {sorted(self._entries)}")
        return self._entries[name]

    def names(self) -> list[str]:
        """All registered names, sorted."""
        self._load()
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        self._load()
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())
