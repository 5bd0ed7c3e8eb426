"""The one exception type for bad user input (spec fields, CLI flags, URIs).

The CLI turns it into a single line and exit code 2; nothing else in the product
should raise at a person with a traceback for input they can fix.
"""

from __future__ import annotations

from collections.abc import Sequence


class SpecError(ValueError):
    """Bad input, located by a field path (``space.activations[2]``, ``--tracking-uri``)."""

    def __init__(self, field: str, message: str, allowed: Sequence[str] | None = None) -> None:
        self.field = field
        self.message = message
        self.allowed = tuple(allowed) if allowed is not None else None
        super().__init__(self.one_line())

    def one_line(self) -> str:
        text = f"{self.field}: {self.message}" if self.field else self.message
        if self.allowed:
            text += f"; allowed: {', '.join(self.allowed)}"
        # One line, always: messages quote user input, which may hold newlines.
        return " ".join(text.split())
