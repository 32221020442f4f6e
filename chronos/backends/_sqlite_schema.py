"""The SQLite backend's file: where it may live, how it is opened, and its schema.

One table of jobs (``chronos_jobs``) with a partial index per state that is searched, a
partial UNIQUE index holding the unique keys of live jobs, a table of counters per queue
and a meta table with the schema version.  Opening is safe when several processes create
the same file at once: the schema is written inside ``BEGIN IMMEDIATE``, so one creates
it and the others find it.

Connections: one per thread, never across a fork.  SQLite forbids using (or even closing)
a connection in a process forked after it was opened: the child's copy of SQLite's lock
bookkeeping lies about which locks it holds, and closing the copy may checkpoint and delete
the WAL under the parent's feet.  So a child forgets every connection it inherited, keeping
them referenced in :data:`_INHERITED` so that nothing ever closes them, and opens its own:
``os.register_at_fork`` does it at the fork, and a check of ``os.getpid()`` per connection
guards the rest.

Thread-safety: the functions are stateless; see :class:`Connections` for the connections.
"""

from __future__ import annotations

import os
import re
import sqlite3
import threading
import weakref
from collections.abc import Callable
from pathlib import Path

__all__ = [
    "CANCEL",
    "CLAIM",
    "COLUMNS",
    "COUNT",
    "FINISH",
    "INSERT",
    "LIVE",
    "MOUNTS",
    "NETWORK_FILESYSTEMS",
    "PROMOTE",
    "PURGE",
    "RECOVER",
    "REQUEUE",
    "SCHEMA_VERSION",
    "Connections",
    "check_path",
    "connect",
    "create_schema",
    "network_filesystem",
    "require_sqlite",
]

#: Bump when the tables change; a file of another version is refused.
SCHEMA_VERSION = 1
#: ``RETURNING`` came with SQLite 3.35.
MIN_SQLITE = (3, 35, 0)
#: Where Linux lists its mounts (read to refuse a network filesystem).
MOUNTS = Path("/proc/mounts")
#: Filesystems whose locks SQLite cannot trust.
NETWORK_FILESYSTEMS = frozenset({"nfs", "nfs4", "cifs", "smb3", "smbfs", "fuse.sshfs"})
SYNCHRONOUS = ("NORMAL", "FULL")
#: Seconds between two tries to switch a new file to WAL.
WAL_RETRY_PAUSE = 0.005

LIVE = "('scheduled', 'ready', 'running')"
TERMINAL = "('succeeded', 'dead', 'cancelled')"
SCHEMA = f"""
CREATE TABLE IF NOT EXISTS chronos_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS chronos_counters (
    queue TEXT NOT NULL, name TEXT NOT NULL, value INTEGER NOT NULL,
    PRIMARY KEY (queue, name)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS chronos_jobs (
    seq INTEGER PRIMARY KEY,           -- enqueue order
    id TEXT NOT NULL UNIQUE,
    queue TEXT NOT NULL,
    state TEXT NOT NULL,
    spec TEXT NOT NULL,                -- JobSpec.to_dict() as JSON
    priority INTEGER NOT NULL,
    unique_key TEXT,
    attempt INTEGER NOT NULL DEFAULT 0,
    max_attempts INTEGER NOT NULL,
    token INTEGER NOT NULL DEFAULT 0,
    finished_token INTEGER,            -- the last token that finished (DUPLICATE)
    owner TEXT,
    result TEXT,                       -- JSON
    error TEXT,
    enqueued_at REAL NOT NULL,
    run_at REAL NOT NULL,
    lease_until REAL,
    finished_at REAL,
    cancel_requested INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS chronos_jobs_ready
    ON chronos_jobs (queue, priority DESC, run_at, seq) WHERE state = 'ready';
CREATE INDEX IF NOT EXISTS chronos_jobs_scheduled
    ON chronos_jobs (queue, run_at) WHERE state = 'scheduled';
CREATE INDEX IF NOT EXISTS chronos_jobs_running
    ON chronos_jobs (queue, lease_until) WHERE state = 'running';
CREATE INDEX IF NOT EXISTS chronos_jobs_finished
    ON chronos_jobs (finished_at) WHERE state IN {TERMINAL};
CREATE UNIQUE INDEX IF NOT EXISTS chronos_jobs_unique
    ON chronos_jobs (queue, unique_key) WHERE unique_key IS NOT NULL AND state IN {LIVE};
CREATE INDEX IF NOT EXISTS chronos_jobs_list ON chronos_jobs (queue, id);
CREATE INDEX IF NOT EXISTS chronos_jobs_list_state ON chronos_jobs (queue, state, id);
"""


# The statements over the schema (named parameters; every write runs in BEGIN IMMEDIATE).
COLUMNS = (
    "id, queue, state, attempt, max_attempts, token, spec, result, error, enqueued_at, "
    "run_at, lease_until, finished_at, cancel_requested, owner"
)
INSERT = (
    "INSERT OR IGNORE INTO chronos_jobs (id, queue, state, spec, priority, unique_key, "
    "max_attempts, enqueued_at, run_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
PROMOTE = (
    "UPDATE chronos_jobs SET state = 'ready' WHERE seq IN (SELECT seq FROM chronos_jobs "
    "WHERE queue = :queue AND state = 'scheduled' AND run_at <= :now ORDER BY run_at "
    "LIMIT :limit)"
)
CLAIM = (
    "UPDATE chronos_jobs SET state = 'running', attempt = attempt + 1, token = token + 1, "
    "lease_until = :until, owner = :owner WHERE seq IN (SELECT seq FROM chronos_jobs "
    "WHERE queue = :queue AND state = 'ready' ORDER BY priority DESC, run_at, seq "
    "LIMIT :limit) RETURNING id, token, attempt, spec, priority, run_at, seq"
)
_ENDED = "cancel_requested OR attempt >= max_attempts"
_GUARD = " WHERE id = :id AND token = :token AND state = 'running' RETURNING queue, state"
#: Per FinishKind: the terminal write, guarded by (id, token, state).
FINISH = {
    "complete": "UPDATE chronos_jobs SET state = 'succeeded', result = :result, "
    "error = NULL, finished_at = :now, lease_until = NULL, finished_token = token" + _GUARD,
    "retry": "UPDATE chronos_jobs SET state = CASE WHEN cancel_requested THEN "
    "'cancelled' WHEN attempt >= max_attempts THEN 'dead' WHEN :run_at <= :now THEN 'ready' "
    f"ELSE 'scheduled' END, finished_at = CASE WHEN {_ENDED} THEN :now END, error = :error, "
    "run_at = :run_at, lease_until = NULL, finished_token = token" + _GUARD,
    "fail": "UPDATE chronos_jobs SET state = CASE WHEN cancel_requested THEN "
    "'cancelled' ELSE 'dead' END, error = :error, finished_at = :now, lease_until = NULL, "
    "finished_token = token" + _GUARD,
    "release": "UPDATE chronos_jobs SET state = CASE WHEN cancel_requested THEN "
    "'cancelled' ELSE 'ready' END, finished_at = CASE WHEN cancel_requested THEN :now END, "
    "attempt = attempt - 1, lease_until = NULL, finished_token = token" + _GUARD,
}
RECOVER = (
    "UPDATE chronos_jobs SET state = CASE WHEN cancel_requested THEN 'cancelled' "
    "WHEN attempt >= max_attempts THEN 'dead' ELSE 'ready' END, "
    f"finished_at = CASE WHEN {_ENDED} THEN :now END, lease_until = NULL, "
    "error = CASE WHEN cancel_requested THEN error "
    "WHEN attempt >= max_attempts THEN printf('lease expired on attempt %d of %d (owner %s): "
    "attempts used up', attempt, max_attempts, owner) "
    "ELSE printf('lease expired on attempt %d (owner %s)', attempt, owner) END "
    "WHERE seq IN (SELECT seq FROM chronos_jobs WHERE queue = :queue AND state = 'running' "
    "AND lease_until < :now ORDER BY lease_until LIMIT :limit) RETURNING state"
)
CANCEL = (
    "UPDATE chronos_jobs SET state = CASE WHEN state = 'running' THEN state ELSE 'cancelled' "
    "END, finished_at = CASE WHEN state = 'running' THEN NULL ELSE :now END, "
    "cancel_requested = (state = 'running') "
    f"WHERE id = :id AND state IN {LIVE} RETURNING state"
)
REQUEUE = (
    "UPDATE OR IGNORE chronos_jobs SET state = 'ready', attempt = 0, result = NULL, "
    "error = NULL, finished_at = NULL, lease_until = NULL, cancel_requested = 0, "
    "run_at = :now WHERE id = :id AND state IN ('dead', 'cancelled')"
)
PURGE = (
    "DELETE FROM chronos_jobs WHERE seq IN (SELECT seq FROM chronos_jobs WHERE state IN "
    f"{TERMINAL} AND finished_at < :cut LIMIT :limit)"
)
COUNT = (
    "INSERT INTO chronos_counters (queue, name, value) VALUES (?, ?, ?) "
    "ON CONFLICT (queue, name) DO UPDATE SET value = value + excluded.value"
)


def require_sqlite() -> None:
    """Raise RuntimeError unless the linked SQLite has ``RETURNING`` (3.35)."""
    if sqlite3.sqlite_version_info < MIN_SQLITE:
        wanted = ".".join(map(str, MIN_SQLITE))
        raise RuntimeError(
            f"the SQLite backend needs SQLite >= {wanted} (for RETURNING); this Python links "
            f"SQLite {sqlite3.sqlite_version}"
        )


def check_path(path: str | os.PathLike[str]) -> str:
    """The absolute path of a store file that SQLite can use, or a clear error.

    Raises:
        TypeError: ``path`` is not a str or path.
        ValueError: an in-memory database, or a file on a network filesystem.
        FileNotFoundError: its directory does not exist.
        PermissionError: the file or its directory is read-only.
    """
    if not isinstance(path, str | os.PathLike):
        raise TypeError(f"path must be a str or a path, got {type(path).__name__}")
    text = os.fspath(path)
    if text in ("", ":memory:") or text.startswith("file::memory:"):
        raise ValueError(
            f"path {text!r} is an in-memory database, but a durable queue needs a file; "
            'for jobs of this process only, use the in-memory backend ("memory://")'
        )
    file = Path(text).expanduser().absolute()
    if not file.parent.is_dir():
        raise FileNotFoundError(f"the directory of the queue file {str(file)!r} does not exist")
    if file.is_dir():
        raise IsADirectoryError(f"the queue file {str(file)!r} is a directory")
    if fstype := network_filesystem(file.parent):
        raise ValueError(
            f"the queue file {str(file)!r} is on a network filesystem ({fstype}); SQLite "
            "needs a local disk (its locks do not work over the network): use a local path, "
            "or the Redis or PostgreSQL backend"
        )
    if file.exists() and not os.access(file, os.W_OK):
        raise PermissionError(f"the queue file {str(file)!r} is read-only")
    if not os.access(file.parent, os.W_OK):
        raise PermissionError(
            f"the directory of the queue file {str(file)!r} is read-only (SQLite writes its "
            "-wal and -shm files beside it)"
        )
    return str(file)


def _unescape(field: str) -> str:
    """A /proc/mounts field with its octal escapes (``\\040`` for a space) decoded."""
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def network_filesystem(directory: Path) -> str | None:
    """The type of the network filesystem that holds ``directory``, or None (local, or no
    :data:`MOUNTS` to read: not Linux)."""
    try:
        lines = MOUNTS.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return None
    target = os.path.realpath(directory)
    best, best_type = "", ""
    for line in lines:
        fields = line.split()
        if len(fields) < 3:
            continue
        mount = _unescape(fields[1])
        inside = target == mount or target.startswith(mount.rstrip("/") + "/")
        if inside and len(mount) >= len(best):
            best, best_type = mount, fields[2]
    return best_type if best_type in NETWORK_FILESYSTEMS else None


def connect(path: str, *, synchronous: str, busy_timeout: float) -> sqlite3.Connection:
    """A new connection in autocommit mode (every write opens ``BEGIN IMMEDIATE``), WAL,
    with ``synchronous`` and the busy timeout set."""
    conn = sqlite3.connect(
        path, timeout=busy_timeout, isolation_level=None, check_same_thread=False
    )
    try:
        conn.execute(f"PRAGMA synchronous = {synchronous}")
    except BaseException:
        conn.close()
        raise
    return conn


def _turn_wal_on(conn: sqlite3.Connection, path: str, busy_timeout: float) -> None:
    """Switch the file to WAL (persistent: a no-op once done).  The switch needs the file to
    itself and answers "locked" at once, without the busy handler, when another process
    opens it at the same moment: so it is retried, for up to ``busy_timeout`` seconds."""
    pause = threading.Event()  # never set: a bounded pause between tries
    for _ in range(max(1, int(busy_timeout / WAL_RETRY_PAUSE))):
        try:
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) and "busy" not in str(exc):
                raise
            pause.wait(WAL_RETRY_PAUSE)
            continue
        if str(mode).lower() != "wal":
            raise RuntimeError(f"SQLite refused WAL mode for {path!r} (journal mode {mode})")
        return
    raise TimeoutError(f"could not switch {path!r} to WAL: another process kept it locked")


def create_schema(conn: sqlite3.Connection, path: str, busy_timeout: float) -> None:
    """Turn WAL on and create the tables if they are missing (idempotent, and safe when
    several processes do it at once: one transaction); check the schema version first.

    Raises:
        PermissionError: the file cannot be written.
        RuntimeError: WAL could not be turned on, or the file has another schema version.
    """
    try:
        _turn_wal_on(conn, path, busy_timeout)
        conn.execute("BEGIN IMMEDIATE")
        try:
            first, *rest = (s for s in SCHEMA.split(";") if s.strip())
            conn.execute(first)  # the meta table
            row = conn.execute("SELECT value FROM chronos_meta WHERE key = 'version'").fetchone()
            if row is not None and row[0] != str(SCHEMA_VERSION):
                raise RuntimeError(
                    f"the queue file {path!r} has schema version {row[0]}, but this chronos "
                    f"reads version {SCHEMA_VERSION}"
                )
            for statement in rest:
                conn.execute(statement)
            conn.execute(
                "INSERT OR IGNORE INTO chronos_meta VALUES ('version', ?)", (str(SCHEMA_VERSION),)
            )
            conn.execute("COMMIT")
        finally:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
    except sqlite3.OperationalError as exc:
        if "readonly" in str(exc):
            raise PermissionError(f"the queue file {path!r} is read-only: {exc}") from exc
        raise


#: Connections inherited through a fork: never used, never closed (see the module docstring).
_INHERITED: list[sqlite3.Connection] = []
#: Every live Connections object, for the fork hook.
_ALL: weakref.WeakSet[Connections] = weakref.WeakSet()


class Connections:
    """A connection per thread of this process, made by ``factory``.

    Args:
        factory: opens a new connection.

    Thread-safety: :meth:`get` may be called from any thread and returns that thread's
    connection; :meth:`close` closes every connection this process opened, so call it once
    the other threads are done.
    """

    def __init__(self, factory: Callable[[], sqlite3.Connection]) -> None:
        self._factory = factory
        self._local = threading.local()  # .conn, .pid: this thread's connection
        self._lock = threading.Lock()  # guards _open and _closed
        #: Held by a thread of this process for the length of each write transaction (see
        #: SQLiteBackend._write); made anew in a forked child.
        self.write_lock = threading.Lock()
        self._open: list[tuple[int, threading.Thread, sqlite3.Connection]] = []
        self._closed = False
        _ALL.add(self)

    def get(self) -> sqlite3.Connection:
        """This thread's connection, opened on first use (again after a fork).

        Raises:
            RuntimeError: after :meth:`close`.
        """
        local = self._local
        conn: sqlite3.Connection | None = getattr(local, "conn", None)
        if conn is not None and local.pid == os.getpid() and not self._closed:
            return conn
        return self._new()

    def _new(self) -> sqlite3.Connection:
        pid, me = os.getpid(), threading.current_thread()
        with self._lock:
            if self._closed:
                raise RuntimeError("the SQLite backend is closed")
        conn = self._factory()
        with self._lock:
            keep = []
            for owner_pid, thread, old in self._open:
                if owner_pid != pid:
                    _INHERITED.append(old)  # opened before a fork: leave it alone
                elif thread is me or not thread.is_alive():
                    old.close()  # its thread is gone (or is replacing it)
                else:
                    keep.append((owner_pid, thread, old))
            keep.append((pid, me, conn))
            self._open = keep
            if self._closed:  # closed meanwhile
                self._open.pop()
                conn.close()
                raise RuntimeError("the SQLite backend is closed")
        self._local.conn, self._local.pid = conn, pid
        return conn

    def after_fork_in_child(self) -> None:
        """Forget every inherited connection (called in a forked child, on its only thread)."""
        _INHERITED.extend(conn for _, _, conn in self._open)
        self._open = []
        self._lock = threading.Lock()  # the parent may have held it while forking
        self.write_lock = threading.Lock()  # so may one of its writers
        self._local = threading.local()

    def close(self) -> None:
        """Close every connection this process opened; idempotent."""
        pid = os.getpid()
        with self._lock:
            self._closed = True
            mine = [conn for owner_pid, _, conn in self._open if owner_pid == pid]
            _INHERITED.extend(conn for owner_pid, _, conn in self._open if owner_pid != pid)
            self._open = []
        for conn in mine:
            conn.close()


def _after_fork_in_child() -> None:
    for connections in list(_ALL):
        connections.after_fork_in_child()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
