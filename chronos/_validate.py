"""Argument checks shared by every public constructor: early errors that name the parameter.

Every message reads ``"<name> must be ..., got ..."``.  A bool is refused wherever a number
or an int is expected, NaN wherever a number is, and ``inf`` where the caller asks for a
finite number.  These run in constructors and public entry points, never per job.
"""

from __future__ import annotations

import math
from typing import Any, TypeVar

__all__ = [
    "check_bool",
    "check_clock",
    "check_count",
    "check_int",
    "check_logger",
    "check_number",
    "check_optional_number",
    "check_real",
]

_T = TypeVar("_T")

#: The methods of a structlog logger that :class:`chronos.events.JobEvents` calls.
LOGGER_METHODS = ("debug", "info", "warning", "error")


def _type_name(value: object) -> str:
    return type(value).__name__


def check_number(
    name: str, value: object, *, minimum: float, inclusive: bool, finite: bool = False
) -> float:
    """A real number (not a bool, not NaN) >= ``minimum`` (> it unless ``inclusive``).

    Args:
        finite: refuse ``inf`` too.

    Raises:
        TypeError, ValueError: naming ``name``.
    """
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{name} must be a number, got {_type_name(value)}")
    if math.isnan(value) or value < minimum or (not inclusive and value == minimum):
        bound = ">=" if inclusive else ">"
        raise ValueError(f"{name} must be {bound} {minimum}, got {value!r}")
    if finite and math.isinf(value):
        raise ValueError(f"{name} must be finite, got {value!r}")
    return float(value)


def check_optional_number(
    name: str, value: object, *, minimum: float, inclusive: bool, finite: bool = False
) -> float | None:
    """None, or what :func:`check_number` accepts.

    Raises:
        TypeError, ValueError: naming ``name``.
    """
    if value is None:
        return None
    return check_number(name, value, minimum=minimum, inclusive=inclusive, finite=finite)


def check_real(name: str, value: object) -> float:
    """A finite real number of any sign (a clock reading, say): not a bool, NaN or inf.

    Raises:
        TypeError, ValueError: naming ``name``.
    """
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{name} must be a number, got {_type_name(value)}")
    if not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    return float(value)


def check_int(name: str, value: object) -> int:
    """An int, not a bool.

    Raises:
        TypeError: naming ``name``.
    """
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {_type_name(value)}")
    return value


def check_count(name: str, value: object, minimum: int) -> int:
    """An int (not a bool) >= ``minimum``.

    Raises:
        TypeError, ValueError: naming ``name``.
    """
    value = check_int(name, value)
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return value


def check_bool(name: str, value: object) -> bool:
    """A bool: ``'no'`` or ``0`` is refused rather than taken for its truth.

    Raises:
        TypeError: naming ``name``.
    """
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be a bool, got {_type_name(value)}")
    return value


def check_clock(name: str, value: _T, *, waits: bool = True) -> _T:
    """A clock instance: a callable ``now`` (and ``wait_until``, if ``waits``).

    Raises:
        TypeError: naming ``name``; a clock class given instead of an instance says so.
    """
    if isinstance(value, type):
        raise TypeError(f"{name} must be a clock instance, got the class {value.__name__}")
    methods = ("now", "wait_until") if waits else ("now",)
    for method in methods:
        if not callable(getattr(value, method, None)):
            raise TypeError(
                f"{name} must be a clock with a {method}() method, got {_type_name(value)}"
            )
    return value


def check_logger(name: str, value: object) -> Any:
    """A structlog-like logger: callable ``debug``, ``info``, ``warning`` and ``error``.

    Raises:
        TypeError: naming ``name``.
    """
    missing = [m for m in LOGGER_METHODS if not callable(getattr(value, m, None))]
    if isinstance(value, type) or missing:
        raise TypeError(
            f"{name} must be a structlog logger with {', '.join(LOGGER_METHODS)} methods, "
            f"got {_type_name(value)}"
        )
    return value
