"""Argument checks shared by every layer: each error names the argument, what it got
and what it takes."""

from __future__ import annotations

from numbers import Integral
from typing import Any


def is_int(value: Any) -> bool:
    """An integer that is not a bool (``True`` is an int in Python, never a count here)."""
    return isinstance(value, Integral) and not isinstance(value, bool)


def check_int(
    name: str,
    value: Any,
    minimum: int | None = None,
    maximum: int | None = None,
    *,
    hint: str = "",
    error: type[Exception] = ValueError,
) -> int:
    """``value`` as an int within [minimum, maximum] (either end open when None).

    A non-integer (a bool, a float, a string) raises ``error`` (ValueError unless told),
    as does a value out of range; ``hint`` is appended to the message."""
    if not is_int(value):
        raise error(f"{name} must be an int, got {type(value).__name__} {value!r}{hint}")
    if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
        if minimum is not None and maximum is not None:
            span = f"in [{minimum}, {maximum}]"
        elif minimum is not None:
            span = f">= {minimum}"
        else:
            span = f"<= {maximum}"
        raise ValueError(f"{name} must be an int {span}, got {value!r}{hint}")
    return int(value)
