"""The one exception type for bad user input (spec fields, CLI flags, URIs).

The CLI turns it into a single line and exit code 2; nothing else in the product
should raise at a person with a traceback for input they can fix.
"""

from __future__ import annotations

import reprlib
from collections.abc import Sequence
from typing import Any

_BRIEF = reprlib.Repr()
_BRIEF.maxstring = _BRIEF.maxother = 80
_BRIEF.maxlevel = 3
_BRIEF.maxlist = _BRIEF.maxtuple = _BRIEF.maxdict = _BRIEF.maxset = 6


def brief(value: Any) -> str:
    """A bounded repr of user input for messages.

    Plain ``repr`` of a YAML alias bomb ("billion laughs": nine lists of nine aliases, nine
    levels deep) walks every shared reference and never returns; a huge string fills the
    terminal. reprlib stops at a fixed depth and length.
    """
    return _BRIEF.repr(value)


class SpecError(ValueError):
    """Bad input, located by a field path (``space.activations[2]``, ``--tracking-uri``)."""

    def __init__(self, field: str, message: str, allowed: Sequence[str] | None = None) -> None:
        self.field = _printable(field)
        self.message = message
        self.allowed = tuple(allowed) if allowed is not None else None
        super().__init__(self.one_line())

    def one_line(self) -> str:
        text = f"{self.field}: {self.message}" if self.field else self.message
        if self.allowed:
            text += f"; allowed: {', '.join(self.allowed)}"
        # One line, always: messages quote user input, which may hold newlines.
        text = _printable(text)
        return text if len(text) <= MAX_MESSAGE else text[: MAX_MESSAGE - 3] + "..."


MAX_MESSAGE = 2000
"""Characters in a one-line message (inputs are quoted with `brief`; this is a backstop)."""


def _printable(text: str) -> str:
    # One line, printable on any terminal: a path from argv may hold undecodable bytes (lone
    # surrogates), and user input may hold newlines or tabs.
    try:  # bytes smuggled in by the file system codec show as the bytes they were: \xff
        text = text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:  # other lone surrogates: \ud800
        text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    return " ".join(text.split())
