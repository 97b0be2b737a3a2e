"""The one name -> object registry of the host: models, tasks, losses, datasets, patches, suites.

Entries register themselves with the `register(name)` decorator, usually when their module is
imported; a registry built with `modules=` imports those modules on its first look-up, so a caller
never has to import them by hand. It behaves as the plugin's own copy (`deq_plugin.registry.Table`,
kept separate because the plugin imports nothing from the host): registering the same definition
again is harmless (a re-run notebook cell, a reloaded module), a different object under a taken name
is a KeyError unless `replace=True`, and an unknown name is a ValueError listing the valid names.
"""
from __future__ import annotations

import importlib
from typing import Callable, Generic, Iterator, Sequence, TypeVar

T = TypeVar("T")


def _same_definition(a: object, b: object) -> bool:
    """True for one object, or two definitions of one function or class (same module and qualified name)."""
    if a is b:
        return True
    key = lambda obj: (getattr(obj, "__module__", None), getattr(obj, "__qualname__", None))  # noqa: E731
    return key(a)[1] is not None and key(a) == key(b)


class Registry(Generic[T]):
    """Maps names to registered objects; a different object under a taken name is an error."""

    def __init__(self, kind: str, modules: Sequence[str] = ()) -> None:
        self.kind = kind
        self._modules = tuple(modules)
        self._loaded = not self._modules
        self._entries: dict[str, T] = {}

    def register(self, name: str, *, replace: bool = False) -> Callable[[T], T]:
        """Decorator that registers its target under `name`; `replace=True` overrides a different entry."""

        def decorator(obj: T) -> T:
            taken = self._entries.get(name)
            if taken is not None and not replace and not _same_definition(taken, obj):
                where = f"{getattr(taken, '__module__', '?')}.{getattr(taken, '__qualname__', taken)}"
                raise KeyError(
                    f"{self.kind} {name!r} is already registered to {where}; pick another name, or pass "
                    f"replace=True to the register decorator to replace it"
                )
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
