"""Argument checks shared by every public constructor: early errors that name the parameter."""

from __future__ import annotations

import math

__all__ = ["check_count", "check_number"]


def check_number(name: str, value: object, *, minimum: float, inclusive: bool) -> float:
    """A real number (not a bool, not NaN) >= ``minimum`` (> it unless ``inclusive``).

    Raises:
        TypeError, ValueError: naming ``name``.
    """
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{name} must be a number, got {type(value).__name__}")
    if math.isnan(value) or value < minimum or (not inclusive and value == minimum):
        bound = ">=" if inclusive else ">"
        raise ValueError(f"{name} must be {bound} {minimum}, got {value!r}")
    return float(value)


def check_count(name: str, value: object, minimum: int) -> int:
    """An int (not a bool) >= ``minimum``.

    Raises:
        TypeError, ValueError: naming ``name``.
    """
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return value
