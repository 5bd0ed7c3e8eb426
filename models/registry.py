"""Name lookup shared by every registry in `models` (activations, initializers, datasets).

Registries are plain dicts from a lower-case name to a value; `lookup` normalises the requested
name once, at the edge, and fails with the full list of valid names so a typo in a config is a
one-line fix rather than a stack trace.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TypeVar

T = TypeVar("T")

__all__ = ["UnknownNameError", "lookup"]


class UnknownNameError(LookupError):
    """A name that is not a key of the registry it was looked up in.

    Attributes:
        kind: what the registry holds, e.g. ``"activation"``.
        name: the name as it was asked for (before normalisation).
        valid: the sorted valid names.
    """

    def __init__(self, kind: str, name: str, valid: tuple[str, ...]) -> None:
        # Passing every field to LookupError keeps `self.args` complete, so the exception pickles
        # (Ray ships exceptions from workers back to the driver by pickling them).
        super().__init__(kind, name, valid)
        self.kind = kind
        self.name = name
        self.valid = tuple(sorted(valid))

    def __str__(self) -> str:
        return f"unknown {self.kind} {self.name!r}; valid: {', '.join(self.valid)}"


def lookup(registry: Mapping[str, T], name: str, kind: str) -> T:
    """Return ``registry[name]`` after lower-casing and stripping ``name``.

    Raises:
        UnknownNameError: if the normalised name is not a key (also for a non-string name).
    """
    key = name.strip().lower() if isinstance(name, str) else name
    try:
        return registry[key]
    except (KeyError, TypeError):
        raise UnknownNameError(kind, name, tuple(registry)) from None
