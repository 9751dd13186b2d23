"""`Registry`: the name → entry table behind norms, placement schemes and surgery adapters.

    SCHEMES = Registry("placement scheme")
    SCHEMES.add("pre", scheme)             # names are stored lower-case
    SCHEMES.lookup("Pre")                  # ValueError listing the known names if unknown
    with SCHEMES.temporary():              # whatever is registered inside is gone afterwards
        SCHEMES.add("mine", other)

A registry is a read-only `Mapping` in registration order (`list(SCHEMES)`, `SCHEMES["pre"]`).
`import_submodules` imports every module of a package, so that a new file whose classes or
functions register themselves needs no import line anywhere else.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Generic, TypeVar

T = TypeVar("T")


class Registry(Mapping[str, T], Generic[T]):
    """Entries by case-insensitive name; `what` (plural `plural`) names an entry in errors."""

    def __init__(self, what: str, plural: str | None = None) -> None:
        self.what = what
        self.plural = plural or f"{what}s"
        self._entries: dict[str, T] = {}

    def add(self, name: str, entry: T) -> str:
        """Register `entry` under `name` (lower-cased, returned); a name taken by another entry
        is a ValueError. Registering the same entry twice is a no-op."""
        if not isinstance(name, str) or not name:
            raise TypeError(f"a {self.what} name must be a non-empty str, got {name!r}")
        key = name.lower()
        if key in self._entries and self._entries[key] is not entry:
            raise ValueError(
                f"a {self.what} named {key!r} is already registered ({self._entries[key]!r})"
            )
        self._entries[key] = entry
        return key

    def lookup(self, name: str) -> T:
        """The entry named `name` (case-insensitive); ValueError listing the known names."""
        if isinstance(name, str) and name.lower() in self._entries:
            return self._entries[name.lower()]
        raise ValueError(f"unknown {self.what} {name!r}; known {self.plural}: {', '.join(self)}")

    @contextmanager
    def temporary(self) -> Iterator[Registry[T]]:
        """Restore the table on exit: entries registered (or removed) inside are undone."""
        saved = dict(self._entries)
        try:
            yield self
        finally:
            self._entries.clear()
            self._entries.update(saved)

    def __getitem__(self, name: str) -> T:
        return self._entries[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Registry({self.what!r}: {', '.join(self)})"


def import_submodules(package: str, path: list[str]) -> None:
    """Import every module of `package` (its `__name__` and `__path__`), running their
    registrations."""
    for module in pkgutil.iter_modules(path):
        importlib.import_module(f"{package}.{module.name}")
