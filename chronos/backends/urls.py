"""Open a durable backend from a URL: ``sqlite:///jobs.db`` and, later, Redis and PostgreSQL.

Each backend module is imported only when its scheme is asked for, so that its driver (an
optional extra) is needed only by programs that use it.

==================================  ==========================================================
URL                                 backend
==================================  ==========================================================
``sqlite:///jobs.db``               a file relative to the working directory
``sqlite:////var/lib/app/jobs.db``  an absolute path (four slashes)
``sqlite:///jobs.db?synchronous=FULL``  options as a query string (``synchronous``,
                                    ``default_max_attempts``, ``busy_timeout``)
==================================  ==========================================================
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from chronos.backends.durable import DurableBackend

__all__ = ["SCHEMES", "open_backend"]

#: Schemes chronos knows, and the extra that brings each one's driver (None: stdlib).
SCHEMES: dict[str, str | None] = {"sqlite": None, "redis": "redis", "postgresql": "postgres"}
_SQLITE_OPTIONS = {"synchronous": str, "default_max_attempts": int, "busy_timeout": float}


def open_backend(url: str) -> DurableBackend:
    """The durable backend ``url`` names.

    Raises:
        TypeError: ``url`` is not a str.
        ValueError: a malformed URL, an unknown scheme or option, or a scheme whose backend
            this version does not have yet (naming what to install or use instead).
    """
    if not isinstance(url, str):
        raise TypeError(f"url must be a str, got {type(url).__name__}")
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme == "sqlite":
        return _open_sqlite(url, parts.netloc, parts.path, parts.query)
    if scheme in ("redis", "rediss", "postgresql", "postgres"):
        extra = "redis" if scheme.startswith("redis") else "postgres"
        raise ValueError(
            f"{scheme}:// queues are not in this version of chronos yet (they will need "
            f"`pip install 'chronos-jobs[{extra}]'`); use sqlite:///path/to/jobs.db"
        )
    known = ", ".join(f"{s}://" for s in SCHEMES)
    raise ValueError(f"unknown queue URL scheme in {url!r}: chronos knows {known}")


def _open_sqlite(url: str, netloc: str, path: str, query: str) -> DurableBackend:
    from chronos.backends.sqlite import SQLiteBackend  # imported where used

    if netloc:
        raise ValueError(
            f"a sqlite URL has no host: {url!r}; write sqlite:///relative.db or "
            "sqlite:////absolute/path.db"
        )
    filename = unquote(path[1:]) if path.startswith("/") else unquote(path)
    if not filename:
        raise ValueError(f"a sqlite URL needs a file: {url!r} (sqlite:///jobs.db)")
    options: dict[str, Any] = {}
    for key, value in parse_qsl(query, keep_blank_values=True, strict_parsing=bool(query)):
        kind = _SQLITE_OPTIONS.get(key)
        if kind is None:
            raise ValueError(f"unknown sqlite URL option {key!r} in {url!r}")
        try:
            options[key] = kind(value)
        except ValueError:
            raise ValueError(
                f"sqlite URL option {key}={value!r} is not a {kind.__name__}"
            ) from None
    return SQLiteBackend(filename, **options)
