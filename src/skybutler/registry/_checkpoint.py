"""SQLite's WAL checkpoints, run by a background thread instead of inside a writer's COMMIT.

In WAL mode each commit appends the pages it changed to the ``-wal`` file; a checkpoint
copies them back into the database file, syncing the WAL before and the database after
(``synchronous=NORMAL`` as well as ``FULL``). SQLite runs one inside the COMMIT that takes
the WAL past ``wal_autocheckpoint`` pages (1,000 by default): every ~90th one-per-call put
then waited for two ``fsync`` calls and the copy, ~60 µs per put on average on this
project's disk (a fifth of a put's time there).

Here the writer connections' threshold is raised to `INLINE_PAGES` (a safety net) and
every `WAKE_AFTER_ROWS` rows a connection commits wake a thread that runs a PASSIVE
checkpoint on its own connection: it copies what no reader still needs, waits for no
reader or writer, and blocks none (only another checkpoint). Its ``fsync`` calls and
copying run beside the writers (SQLite releases the GIL). What a commit guarantees is
unchanged: it is durable in the WAL before COMMIT returns, whatever happens to the
checkpoint; a checkpoint cut short by a crash is redone by the next one.
"""

from __future__ import annotations

import atexit
import logging
import os
import sqlite3
import threading
import weakref
from pathlib import Path

__all__ = ["INLINE_PAGES", "WAKE_AFTER_ROWS", "WalCheckpointer"]

INLINE_PAGES = 20_000
"""Writer connections' ``wal_autocheckpoint``: a checkpoint runs inside a COMMIT only past this many pages
(80 MB of 4 KiB pages) — when the background thread cannot keep up or a reader keeps the WAL in use."""

WAKE_AFTER_ROWS = 128
"""Rows a connection commits (SQLite's ``total_changes``) before it wakes the checkpointer: about 64
one-per-call puts (700 WAL pages), or every put_many of more than 64 datasets."""

_IDLE_SECONDS = 30.0
"""A checkpointer not woken for this long ends its thread and closes its connection."""

_log = logging.getLogger(__name__)


class WalCheckpointer:
    """A daemon thread that checkpoints the WAL of the SQLite database at ``path`` when woken.

    Made per engine (`skybutler.registry._db.make_engine`); `wake` is called from the
    engine's commit listener, `close` by `Database.close` (and at exit). The thread ends
    after `_IDLE_SECONDS` without a wake; the next wake starts another. In a forked
    process the parent's thread and connection do not exist: the first `wake` there
    starts its own.
    """

    def __init__(self, path: Path, *, synchronous: str):
        self._path = path
        self._synchronous = synchronous
        self._lock = threading.Lock()
        self._event = threading.Event()
        self._pid = -1
        self._thread: threading.Thread | None = None
        self._closed = False
        _open.add(self)

    def wake(self) -> None:
        """Have the WAL checkpointed soon (cheap: sets an event; starts the thread the first time)."""
        if self._pid != os.getpid():
            self._start()
        self._event.set()

    def _start(self) -> None:
        with self._lock:
            if self._closed or self._pid == os.getpid():
                return
            self._pid = os.getpid()
            self._event = threading.Event()  # a forked child's own: the parent's may be set, with no thread
            self._thread = threading.Thread(target=self._run, args=(self._event,), name="skybutler-wal-checkpoint",
                                            daemon=True)
            self._thread.start()

    def _run(self, event: threading.Event) -> None:
        conn: sqlite3.Connection | None = None
        try:
            while True:
                if not event.wait(_IDLE_SECONDS):
                    with self._lock:
                        if not event.is_set():  # idle: ended (a butler never closed keeps no thread); the next wake starts one
                            self._pid, self._thread = -1, None
                            return
                event.clear()
                if self._closed:
                    return
                with _IN_SQLITE:  # a fork waits for it (see `_IN_SQLITE`)
                    if conn is None:
                        conn = sqlite3.connect(self._path, timeout=60, isolation_level=None, check_same_thread=False)
                        conn.execute(f"PRAGMA synchronous={self._synchronous}")
                    conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
        except Exception as exc:  # noqa: BLE001 - never fatal: the writers' own checkpoints take over
            _log.warning("Background WAL checkpoints of %s stopped (%s); commits checkpoint it past %d pages",
                         self._path, exc, INLINE_PAGES)
        finally:
            if conn is not None:
                with _IN_SQLITE:
                    conn.close()

    def close(self, timeout: float = 5.0) -> None:
        """Stop the thread (after the checkpoint under way, if any) and close its connection."""
        with self._lock:
            self._closed = True
            thread = self._thread if self._pid == os.getpid() else None
        self._event.set()
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)
        _open.discard(self)


_open: weakref.WeakSet[WalCheckpointer] = weakref.WeakSet()

_IN_SQLITE = threading.Lock()
"""Held by a checkpointer thread while it is inside SQLite, and by ``os.fork`` around the fork.

A process forked while another thread is inside SQLite copies SQLite's internal mutexes
held: the child's first connection may wait for them forever. The batch and pipeline
workers start from a forkserver (no threads), but a user's own ``fork`` may come at
any moment; it waits for the checkpoint under way (milliseconds) instead.
"""


def _release_in_child() -> None:
    global _IN_SQLITE
    _IN_SQLITE = threading.Lock()  # the parent's, copied held; no thread of the child holds it


if hasattr(os, "register_at_fork"):
    os.register_at_fork(before=lambda: _IN_SQLITE.acquire(), after_in_parent=lambda: _IN_SQLITE.release(),
                        after_in_child=_release_in_child)


def _close_all() -> None:
    for checkpointer in list(_open):
        checkpointer.close(timeout=2.0)


atexit.register(_close_all)
