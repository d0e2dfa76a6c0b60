"""Checkpoints and the durable applied index of the state database, on a connection of their
own (docs/storage.md §6.2 and §8). Everything here blocks: call it from the snapshot thread,
never the event loop.

``round()``: a PASSIVE checkpoint (never waits for the writer or readers), then the durable
applied index: one read transaction reads ``meta`` (the newest commit, so every frame of
the transaction that wrote that index has been ``write()``n to ``state.db-wal``), then an
fsync of ``state.db-wal`` and of ``state.db``. If the WAL was reset in between, its frames
up to that index were checkpointed into ``state.db`` first, which the fsync covers too.

``tail(park)``: while the apply worker is parked (nothing writes): a second PASSIVE copies
what was written during the first, then, unless the park was given up meanwhile, a
TRUNCATE checkpoint (``busy_timeout = 0``: a reader in the way makes it return busy at once
instead of waiting) resets the SQLite WAL to zero bytes.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Callable
from dataclasses import dataclass

from confman.node.state.schema import read_meta
from confman.raft.types import ConfState

__all__ = ["Durability", "DurablePoint", "Park"]


@dataclass(frozen=True, slots=True)
class DurablePoint:
    """State durable at (index, term) with this membership; WAL and freelist sizes then."""

    index: int
    term: int
    conf_state: ConfState
    wal_bytes: int
    freelist_bytes: int


class Park:
    """Shared by the loop and the snapshot thread during one park of the apply worker.

    The thread calls ``enter_truncate`` before the TRUNCATE checkpoint (which takes the
    writer lock), the loop ``give_up`` when the park's time is over: whichever comes first
    wins, so apply never resumes while TRUNCATE holds the lock.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._state = "passive"

    def enter_truncate(self) -> bool:
        with self._lock:
            if self._state != "passive":
                return False
            self._state = "truncate"
            return True

    def give_up(self) -> bool:
        """True: apply may resume now; False: TRUNCATE is running, wait for it."""
        with self._lock:
            if self._state == "truncate":
                return False
            self._state = "abandoned"
            return True


class Durability:
    """Checkpoint connection of the database at ``db_path`` (``fsync`` replaceable in tests)."""

    def __init__(self, db_path: str | os.PathLike[str], fsync: Callable[[int], None] = os.fsync):
        self.db_path = os.fspath(db_path)
        self._fsync = fsync
        self._conn: sqlite3.Connection | None = None
        #: Results of the last checkpoints: "complete", "busy" or "truncated".
        self.last_tail = ""

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            conn = sqlite3.connect(
                self.db_path, isolation_level=None, check_same_thread=False, timeout=0
            )
            conn.execute("PRAGMA busy_timeout=0")  # never wait for a lock
            conn.execute("PRAGMA synchronous=NORMAL")
            self._conn = conn
        return self._conn

    def close(self) -> None:
        """Close the connection (before the database file is replaced; reopened on use)."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def checkpoint(self, mode: str = "PASSIVE") -> tuple[int, int, int]:
        """``PRAGMA wal_checkpoint(mode)``: (busy, frames in the WAL, frames copied)."""
        row = self._connection().execute(f"PRAGMA wal_checkpoint({mode})").fetchone()
        return int(row[0]), int(row[1]), int(row[2])

    def sync_file(self, path: str) -> None:
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            return
        try:
            self._fsync(fd)
        finally:
            os.close(fd)

    def durable_point(self) -> DurablePoint:
        """Establish durability of the newest commit (§6.2) and return it."""
        conn = self._connection()
        conn.execute("BEGIN")
        try:
            meta = read_meta(conn)
            pages = conn.execute("PRAGMA freelist_count").fetchone()[0]
            page_size = conn.execute("PRAGMA page_size").fetchone()[0]
        finally:
            conn.execute("COMMIT")
        self.sync_file(self.db_path + "-wal")
        self.sync_file(self.db_path)
        return DurablePoint(
            meta.applied_index,
            meta.applied_term,
            meta.conf_state,
            self.wal_bytes(),
            int(pages) * int(page_size),
        )

    def round(self) -> DurablePoint:
        """PASSIVE checkpoint, then the durable applied index."""
        self.checkpoint("PASSIVE")
        return self.durable_point()

    def wal_bytes(self) -> int:
        try:
            return os.stat(self.db_path + "-wal").st_size
        except FileNotFoundError:
            return 0

    def tail(self, park: Park) -> str:
        """The parked checkpoint: PASSIVE, then TRUNCATE unless the park was given up."""
        busy, log, done = self.checkpoint("PASSIVE")
        result = "busy" if busy or log != done else "complete"
        if park.enter_truncate():
            busy, _, _ = self.checkpoint("TRUNCATE")
            result = "busy" if busy else "truncated"
        self.last_tail = result
        return result
