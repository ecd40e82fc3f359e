"""One registry style for every pluggable concept: a table of name -> "module:attribute".

Entries are imported on first use, so a registry can name heavy modules (a suite's networks, a
metric's weights) without importing them; an unknown name is a one-line BadInput naming the close
matches. Suites, feature extractors, text-to-image scorers and weights use it; methods keep the
same shape in ``methods/__init__.py`` (they know nothing of ``bench``).
"""
from __future__ import annotations

import difflib
import importlib
from typing import Any

from .errors import BadInput


def unknown_name(kind: str, name, known) -> BadInput:
    """The one-line error for an unknown ``name`` of ``kind``, with close matches."""
    known = list(known)
    close = difflib.get_close_matches(str(name), known, n=2)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    return BadInput(f"unknown {kind} {name!r}{hint} (available: {', '.join(known) or 'none'})")


class Registry:
    """Named entries, each a ``"module:attribute"`` string imported when first asked for, or an object."""

    def __init__(self, kind: str, entries: dict[str, Any]):
        self.kind, self.entries = kind, dict(entries)

    def names(self) -> list[str]:
        return list(self.entries)

    def __contains__(self, name) -> bool:
        return name in self.entries

    def register(self, name: str, entry: Any) -> None:
        """Add ``name`` (a ``"module:attribute"`` string or the object itself)."""
        self.entries[name] = entry

    def check(self, name) -> None:
        """BadInput unless ``name`` is registered."""
        if name not in self.entries:
            raise unknown_name(self.kind, name, self.entries)

    def get(self, name):
        """The object registered as ``name`` (imported on first use; kept as its string)."""
        self.check(name)
        entry = self.entries[name]
        if isinstance(entry, str):
            module, attr = entry.split(":")
            entry = getattr(importlib.import_module(module), attr)
        return entry
