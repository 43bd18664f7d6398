"""Name → class registries, filled by the modules of a package as they are imported.

The way xaitk-saliency keeps an interface apart from its implementations: a kind of piece (a
dataset source, a saliency algorithm, a model flavour) is a base class with a `Registry`, and
each implementation is one module in the registry's package that decorates its class with
`@REGISTRY.register`. The registry imports every module of its package the first time it is
asked for a name, so a new implementation is one new file: nothing else lists it.
"""

from __future__ import annotations

import importlib
import pkgutil
from typing import Generic, Iterator, TypeVar

T = TypeVar("T", bound=type)


class Registry(Generic[T]):
    """Classes of one kind by their `name` attribute, listed in the order of their names (not of
    their registration, which depends on which module imported which), or with `ordered` in
    the order they registered, for kinds tried in a preferred order."""

    def __init__(self, kind: str, package: str | None = None, ordered: bool = False) -> None:
        self.kind = kind
        self.package = package
        self.ordered = ordered
        self._classes: dict[str, T] = {}
        self._discovered = package is None

    def register(self, cls: T) -> T:
        """Class decorator: add `cls` under `cls.name`."""
        name = cls.name
        if name in self._classes and self._classes[name] is not cls:
            raise ValueError(f"two {self.kind}s named {name!r}: "
                             f"{self._classes[name].__qualname__} and {cls.__qualname__}")
        self._classes[name] = cls
        return cls

    def _discover(self) -> None:
        if self._discovered:
            return
        self._discovered = True
        module = importlib.import_module(self.package)
        for info in sorted(pkgutil.iter_modules(module.__path__), key=lambda m: m.name):
            if not info.name.startswith("_"):
                importlib.import_module(f"{self.package}.{info.name}")

    def names(self) -> tuple[str, ...]:
        self._discover()
        return tuple(self._classes) if self.ordered else tuple(sorted(self._classes))

    def __iter__(self) -> Iterator[T]:
        return iter([self._classes[name] for name in self.names()])

    def get(self, name: str) -> T:
        """The class named `name`; ValueError naming the known ones otherwise."""
        self._discover()
        try:
            return self._classes[name]
        except KeyError:
            raise ValueError(f"unknown {self.kind} {name!r}; known: "
                             f"{', '.join(self.names())}") from None
