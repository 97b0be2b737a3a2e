"""Name -> builder tables for solvers, gradient modes, activations and swap blocks."""
from __future__ import annotations

from typing import Callable, Generic, TypeVar

T = TypeVar("T")


def _same_definition(a: object, b: object) -> bool:
    """True for one object, or two definitions of one function (a re-run notebook cell, a reloaded module)."""
    if a is b:
        return True
    key = lambda obj: (getattr(obj, "__module__", None), getattr(obj, "__qualname__", None))  # noqa: E731
    return key(a)[1] is not None and key(a) == key(b)


class Table(Generic[T]):
    """A small registry: names map to objects; unknown look-ups are errors listing the valid names.

    Registering the same function under its name again is harmless (the newer definition is kept,
    so a re-run notebook cell or a reloaded module works); a different function under a taken name
    is an error unless `replace=True` is passed.
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, T] = {}

    def register(self, name: str, *, replace: bool = False) -> Callable[[T], T]:
        """Decorator registering its target as `name`; `replace=True` overrides a different entry."""

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

    def get(self, name: str) -> T:
        """The entry called `name`; an unknown name is an error listing the valid ones."""
        try:
            return self._entries[name]
        except KeyError:
            raise ValueError(f"unknown {self.kind} {name!r}; valid: {sorted(self._entries)}") from None

    def names(self) -> list[str]:
        """All registered names, sorted."""
        return sorted(self._entries)
