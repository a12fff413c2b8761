"""Narrowing checks for decoded JSON values, shared by the translators."""

from __future__ import annotations

import math
from typing import Any


def dict_or[D](value: Any, default: D) -> dict[str, Any] | D:
    """`value` if it is a JSON object, else `default` (one lookup, which the type checker narrows)."""
    return value if isinstance(value, dict) else default


def list_or[D](value: Any, default: D) -> list[Any] | D:
    """`value` if it is a JSON array, else `default`."""
    return value if isinstance(value, list) else default


def is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
