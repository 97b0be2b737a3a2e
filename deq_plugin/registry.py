"""Name -> builder tables for solvers, gradient modes, activations and swap blocks."""
from __future__ import annotations

from typing import Callable, Generic, TypeVar

T = TypeVar("T")


class Table(Generic[T]):
    """A small registry: names map to objects; duplicate names and unknown look-ups are errors."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator registering its target as `name`."""

        def decorator(obj: T) -> T:
            if name in self._entries:
                raise KeyError(f"{self.kind} {name!r} is already registered")
            self._entries[name] = obj
            return obj

        return decorator

    def get(self, name: str) -> T:
        """The entry called `name`; an unknown name is an error listing the valid ones."""
        try:
            return self._entries[name]
        except KeyError:
            raise ValueError(f"unknown {self.kind} {name!r}; valid: {sorted(self._entries)}") from None

    def names(self) -> list[str]:
        """All registered names, sorted."""
        return sorted(self._entries)
