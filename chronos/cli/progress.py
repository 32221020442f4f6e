"""Log lines and a live progress line sharing one terminal, without garbling each other.

A :class:`Console` owns a text stream.  Log lines go through :meth:`Console.write_line`;
the progress line is the last line of the terminal, rewritten in place.  Every write takes
the console's lock, and a log line first erases the progress line, then prints itself and a
newline, then redraws the progress line under it, so neither ever cuts into the other.

The progress line is drawn only when the stream is a terminal.  When it is a pipe or a file,
:meth:`Console.set_status` does nothing and only the log lines are written, plain.

:class:`LineLogger` plugs a console into structlog (``logger_factory``), and
:class:`ProgressTicker` redraws the progress line a few times a second from a thread.
"""

from __future__ import annotations

import shutil
import threading
from collections.abc import Callable
from typing import Any, TextIO

from chronos import StatsSnapshot

__all__ = ["Console", "LineLogger", "ProgressTicker", "render_progress"]

#: Back to the start of the line, then erase the whole line (ANSI "EL2").
_ERASE = "\r\x1b[2K"
_BAR = 20


class Console:
    """One output stream shared by log lines and a progress line.

    Args:
        stream: where to write (the command line passes ``sys.stderr``).
        live: draw the progress line; default: only if ``stream`` is a terminal.

    Thread-safety: every method may be called from any thread; writes are serialised by
    one lock, so lines never interleave.
    """

    def __init__(self, stream: TextIO, *, live: bool | None = None) -> None:
        self._stream = stream
        self.live = _isatty(stream) if live is None else live
        self._lock = threading.Lock()  # guards writes to _stream, and _status
        self._status = ""

    @property
    def stream(self) -> TextIO:
        return self._stream

    def write_line(self, line: str) -> None:
        """Write one log line (a newline is added) above the progress line."""
        with self._lock:
            status = self._status
            self._stream.write(f"{_ERASE if status else ''}{line}\n{status}")
            self._stream.flush()

    def set_status(self, text: str) -> None:
        """Replace the progress line (cut to the terminal's width); no-op when not live."""
        if not self.live:
            return
        width = shutil.get_terminal_size(fallback=(80, 24)).columns
        text = text[: max(0, width - 1)]
        with self._lock:
            self._status = text
            self._stream.write(_ERASE + text)
            self._stream.flush()

    def clear_status(self) -> None:
        """Erase the progress line, leaving the cursor at the start of an empty line."""
        with self._lock:
            if self._status:
                self._status = ""
                self._stream.write(_ERASE)
                self._stream.flush()


def _isatty(stream: TextIO) -> bool:
    isatty = getattr(stream, "isatty", None)
    return bool(isatty()) if isatty is not None else False


class LineLogger:
    """A structlog logger that hands each rendered line to a :class:`Console`.

    Use it as ``logger_factory=lambda *args: LineLogger(console)`` with a renderer (such as
    structlog's ``ConsoleRenderer`` or ``JSONRenderer``) as the last processor.

    Thread-safety: as :class:`Console`.
    """

    __slots__ = ("_console",)

    def __init__(self, console: Console) -> None:
        self._console = console

    def msg(self, message: str) -> None:
        self._console.write_line(message)

    log = debug = info = warn = warning = msg
    err = error = critical = exception = fatal = failure = msg


def render_progress(
    stats: StatsSnapshot, total: int, elapsed: float, dispatched: int | None = None
) -> str:
    """The progress line: a bar, done / total, the counts by outcome, the dispatch rate."""
    done = stats.finished
    filled = _BAR * done // total if total else _BAR
    parts = [
        f"[{'#' * filled}{'-' * (_BAR - filled)}] {done}/{total} done",
        f"{stats.succeeded} ok",
        f"{stats.failed} failed",
        f"{stats.timed_out} timed out",
    ]
    if stats.cancelled:
        parts.append(f"{stats.cancelled} cancelled")
    parts.append(f"{stats.waiting_to_retry} retrying")
    if dispatched is not None and elapsed > 0:
        parts.append(f"{dispatched / elapsed:.1f} dispatches/s")
    parts.append(f"{elapsed:.1f}s")
    return " | ".join(parts)


class ProgressTicker:
    """Redraws a console's progress line every ``every`` seconds from its own thread.

    Args:
        console: where to draw; nothing happens unless it is live.
        render: returns the text of the progress line; called on the ticker's thread.
        every: seconds between two redraws.

    Thread-safety: start and stop from one thread (a context manager does both); ``render``
    must be safe to call from another thread.
    """

    def __init__(self, console: Console, render: Callable[[], str], every: float = 0.1) -> None:
        self._console = console
        self._render = render
        self._every = every
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> ProgressTicker:
        if self._console.live and self._thread is None:
            self._thread = threading.Thread(target=self._run, name="chronos-progress", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        """Stop redrawing and erase the progress line.  Idempotent."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5.0)
        self._console.clear_status()

    def __enter__(self) -> ProgressTicker:
        return self.start()

    def __exit__(self, *exc_info: Any) -> None:
        self.stop()

    def _run(self) -> None:
        while True:
            self._console.set_status(self._render())
            if self._stop.wait(self._every):
                return
