"""Layers chosen by module-name glob patterns (``layer3.*``), matched case-sensitively on every platform."""

from __future__ import annotations

import fnmatch


def first_match(name: str, patterns: list[str]) -> str | None:
    """The first of ``patterns`` that matches the module name ``name``, or None."""
    return next((p for p in patterns if fnmatch.fnmatchcase(name, p)), None)


def matches(name: str, patterns: list[str]) -> bool:
    """Whether any of ``patterns`` matches the module name ``name``."""
    return first_match(name, patterns) is not None
