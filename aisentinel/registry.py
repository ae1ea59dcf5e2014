"""A tiny name -> (config model, factory) registry used by every stage.

Each plug-in module registers itself in one line::

    REGISTRY.register("file", FileSourceConfig, FileSource)

and the stage's ``__init__`` imports its plug-in modules explicitly, so there is
no import-time magic outside the package and tests can build private registries.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Generic, TypeVar

from pydantic import BaseModel

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Entry(Generic[T]):
    """One registered plug-in: its name, config model and factory (usually the class)."""

    name: str
    config_model: type[BaseModel]
    factory: T


class Registry(Generic[T]):
    """Plug-ins of one stage, by name."""

    def __init__(self, stage: str) -> None:
        self.stage = stage
        self._entries: dict[str, Entry[T]] = {}

    def register(self, name: str, config_model: type[BaseModel], factory: T) -> T:
        """Add a plug-in; a second plug-in under the same name is a programming error."""
        if name in self._entries:
            raise ValueError(f"{self.stage} plug-in {name!r} is registered twice")
        self._entries[name] = Entry(name, config_model, factory)
        return factory

    def get(self, name: str) -> Entry[T]:
        """The plug-in called ``name``; ``KeyError`` names the known ones."""
        try:
            return self._entries[name]
        except KeyError:
            known = ", ".join(sorted(self._entries)) or "none"
            raise KeyError(f"unknown {self.stage} {name!r} (known: {known})") from None

    def names(self) -> list[str]:
        """Registered names, sorted."""
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[Entry[T]]:
        return iter(self._entries.values())
