"""Checks of the SQLite behaviour docs/storage.md relies on (run by hand, not a test).

1. Bytes at rest per 1 KB version in the format-2 ``versions`` table (rowid = vid).
2. The SQLite WAL stays bounded by ``journal_size_limit`` with PASSIVE checkpoints on a
   second thread while a writer commits slices of 64 rows and a reader makes short reads.
3. A long read transaction stops the WAL from resetting; a TRUNCATE checkpoint with
   busy_timeout=0 then fails at once instead of waiting.
4. Receiving a logical stream: executemany of rows into a scratch database
   (journal_mode=OFF, synchronous=OFF), rows per second.
5. With a writer that commits back to back, PASSIVE checkpoints complete but the WAL never
   resets (a writer only restarts the WAL when its transaction begins after a complete
   checkpoint); "parking" the writer at a slice boundary for a second, tail checkpoint
   bounds it. Measured with and without parking, back to back and at ~1,600 rows/s.
6. Cost of one prune step: deleting 1,000 and 5,000 of the oldest versions (1 KB) and their
   events in one transaction, then an incremental vacuum of 256 pages (and how the sqlite3
   module must run that pragma).
7. Cost of the durability step: fsync of state.db-wal after ~1,000 rows (~1 s of writes).

    .venv/bin/python docs/benchmarks/2026-12-03-disk/sqlite_checks.py [--rows 200000]
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import tempfile
import threading
import time

VERSIONS = """
CREATE TABLE versions (vid INTEGER PRIMARY KEY, key_id INTEGER NOT NULL,
    version INTEGER NOT NULL, value BLOB, type_id INTEGER NOT NULL,
    created_us INTEGER NOT NULL, actor_id INTEGER NOT NULL);
CREATE INDEX versions_by_key ON versions (key_id, version);
CREATE TABLE events (eid INTEGER PRIMARY KEY, action INTEGER NOT NULL, ns_id INTEGER NOT NULL,
    key_id INTEGER, vid INTEGER, prev_vid INTEGER, ts_us INTEGER NOT NULL,
    actor_id INTEGER NOT NULL, ns_path TEXT);
CREATE TABLE meta (id INTEGER PRIMARY KEY, applied_index INTEGER);
INSERT INTO meta VALUES (0, 0);
"""


def value(i: int) -> bytes:
    return (f"w{i:08d}-" + "abcdefghij0123456789" * 52)[:1024].encode()


def open_db(path: str, limit: int | None) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA page_size=8192")
    conn.execute("PRAGMA auto_vacuum=INCREMENTAL")
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("PRAGMA wal_autocheckpoint=0")
    if limit is not None:
        conn.execute(f"PRAGMA journal_size_limit={limit}")
    return conn


def write_load(conn: sqlite3.Connection, rows: int, keys: int, start: int = 0) -> None:
    for s in range(start, start + rows, 64):
        conn.execute("BEGIN IMMEDIATE")
        batch = range(s, min(s + 64, start + rows))
        conn.executemany(
            "INSERT INTO versions VALUES (?, ?, ?, ?, 0, ?, 1)",
            [((i + 1) << 16, i % keys, i // keys + 1, value(i), i) for i in batch],
        )
        conn.executemany(
            "INSERT INTO events VALUES (?, 2, 1, ?, ?, ?, ?, 1, NULL)",
            [((i + 1) << 16, i % keys, (i + 1) << 16, None, i) for i in batch],
        )
        conn.execute("UPDATE meta SET applied_index = ?", (batch[-1] + 1,))
        conn.execute("COMMIT")


def check_bounded(d: str, rows: int, limit: int) -> None:
    path = os.path.join(d, "bounded.db")
    conn = open_db(path, limit)
    conn.executescript(VERSIONS)
    ck = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    ck.execute("PRAGMA busy_timeout=0")
    rd = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    stop = threading.Event()
    max_wal = [0]
    rounds = [0, 0]  # checkpoints, complete ones

    def checkpointer() -> None:
        while not stop.is_set():
            _busy, log, done = ck.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
            rounds[0] += 1
            rounds[1] += int(log == done)
            fd = os.open(path + "-wal", os.O_RDONLY)
            try:
                os.fsync(fd)  # the durability step of docs/storage.md section 6.2
            finally:
                os.close(fd)
            time.sleep(0.1)

    def reader() -> None:
        while not stop.is_set():
            rd.execute("SELECT applied_index FROM meta").fetchone()  # short read
            max_wal[0] = max(max_wal[0], os.path.getsize(path + "-wal"))
            time.sleep(0.01)

    threads = [threading.Thread(target=checkpointer), threading.Thread(target=reader)]
    for t in threads:
        t.start()
    t0 = time.perf_counter()
    write_load(conn, rows, 10_000)
    dt = time.perf_counter() - t0
    stop.set()
    for t in threads:
        t.join()
    ck.execute("PRAGMA wal_checkpoint(PASSIVE)")
    db = os.path.getsize(path)
    print(
        f"[1] {rows:,} versions of 1 KB + events: state.db {db / 2**20:.1f} MiB = "
        f"{db / rows:.0f} B per version ({db / (rows * 1024):.2f}x the value bytes); "
        f"{rows / dt:,.0f} rows/s written"
    )
    print(
        f"[2] journal_size_limit {limit / 2**20:.0f} MiB, PASSIVE every 100 ms "
        f"({rounds[0]} rounds, {rounds[1]} complete): largest WAL seen "
        f"{max_wal[0] / 2**20:.1f} MiB, at the end {os.path.getsize(path + '-wal') / 2**20:.1f} MiB"
    )
    for c in (conn, ck, rd):
        c.close()


def check_long_reader(d: str, limit: int) -> None:
    path = os.path.join(d, "pinned.db")
    conn = open_db(path, limit)
    conn.executescript(VERSIONS)
    conn.execute("PRAGMA busy_timeout=0")
    rd = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    rd.execute("BEGIN")
    rd.execute("SELECT count(*) FROM versions").fetchone()  # holds a read snapshot
    write_load(conn, 20_000, 10_000)
    ck = sqlite3.connect(path, isolation_level=None)
    ck.execute("PRAGMA busy_timeout=0")
    ck.execute("PRAGMA wal_checkpoint(PASSIVE)")
    grown = os.path.getsize(path + "-wal")
    t0 = time.perf_counter()
    busy, _log, _done = ck.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
    waited = time.perf_counter() - t0
    print(
        f"[3] with a read transaction open: WAL {grown / 2**20:.1f} MiB after 20,000 rows; "
        f"TRUNCATE with busy_timeout=0 -> busy={busy} after {waited * 1000:.2f} ms"
    )
    rd.execute("COMMIT")
    busy, _log, _done = ck.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
    print(
        f"    reader closed: TRUNCATE busy={busy}, WAL now "
        f"{os.path.getsize(path + '-wal') / 2**20:.1f} MiB"
    )
    for c in (conn, rd, ck):
        c.close()


def check_receive(d: str, rows: int) -> None:
    src = sqlite3.connect(os.path.join(d, "bounded.db"))
    dst_path = os.path.join(d, "incoming.db")
    dst = sqlite3.connect(dst_path, isolation_level=None)
    dst.execute("PRAGMA page_size=8192")
    dst.execute("PRAGMA journal_mode=OFF")
    dst.execute("PRAGMA synchronous=OFF")
    dst.execute(
        "CREATE TABLE versions (vid INTEGER PRIMARY KEY, key_id INTEGER NOT NULL, "
        "version INTEGER NOT NULL, value BLOB, type_id INTEGER NOT NULL, "
        "created_us INTEGER NOT NULL, actor_id INTEGER NOT NULL)"
    )
    t0 = time.perf_counter()
    src.execute("BEGIN")
    cur = src.execute("SELECT * FROM versions ORDER BY vid")
    n = 0
    while chunk := cur.fetchmany(900):  # ~1 MiB of 1 KB values
        dst.execute("BEGIN")
        dst.executemany("INSERT INTO versions VALUES (?, ?, ?, ?, ?, ?, ?)", chunk)
        dst.execute("COMMIT")
        n += len(chunk)
    dst.execute("CREATE INDEX versions_by_key ON versions (key_id, version)")
    dt = time.perf_counter() - t0
    src.execute("COMMIT")
    size = os.path.getsize(dst_path)
    print(
        f"[4] logical copy of {n:,} versions (read in one transaction, executemany in "
        f"~1 MiB chunks, index built after): {dt:.2f} s = {n / dt:,.0f} rows/s; "
        f"scratch db {size / 2**20:.1f} MiB"
    )
    src.close()
    dst.close()


def check_parked(d: str, rows: int, gap_s: float, every_s: float, park: bool) -> None:
    path = os.path.join(d, f"parked-{park}-{gap_s}.db")
    conn = open_db(path, 16 << 20)
    conn.executescript(VERSIONS)
    ck = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    stop, want, parked, go = (threading.Event() for _ in range(4))
    pauses: list[float] = []
    max_wal = 0

    def checkpointer() -> None:
        while not stop.wait(every_s):
            ck.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()  # bulk, writer running
            if not park:
                continue
            fd = os.open(path, os.O_RDONLY)
            try:
                os.fsync(fd)  # flush the copied pages before parking, so the tail syncs little
            finally:
                os.close(fd)
            want.set()
            if not parked.wait(2):
                continue
            t0 = time.perf_counter()
            ck.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()  # tail, writer parked
            pauses.append((time.perf_counter() - t0) * 1000)
            want.clear()
            parked.clear()
            go.set()

    t = threading.Thread(target=checkpointer)
    t.start()
    t0 = time.perf_counter()
    for s in range(0, rows, 64):
        if want.is_set():  # the apply worker's slice boundary
            parked.set()
            go.wait()
            go.clear()
        write_load(conn, 64, 10_000, start=s)
        max_wal = max(max_wal, os.path.getsize(path + "-wal"))
        if gap_s:
            time.sleep(gap_s)
    dt = time.perf_counter() - t0
    stop.set()
    parked.set()
    go.set()
    t.join()
    pauses.sort()
    tail = (
        f"; writer parked {len(pauses)} times, median {pauses[len(pauses) // 2]:.2f} ms, "
        f"max {pauses[-1]:.2f} ms"
        if pauses
        else ""
    )
    print(
        f"[5] {'parking' if park else 'no parking'}, {rows / dt:,.0f} rows/s in slices of 64, "
        f"PASSIVE every {every_s} s: largest WAL {max_wal / 2**20:.1f} MiB{tail}"
    )
    conn.close()
    ck.close()


def check_prune(d: str) -> None:
    conn = open_db(os.path.join(d, "bounded.db"), 16 << 20)
    for n in (1_000, 5_000):
        t0 = time.perf_counter()
        conn.execute("BEGIN IMMEDIATE")
        vids = [r[0] for r in conn.execute("SELECT vid FROM versions ORDER BY vid LIMIT ?", (n,))]
        conn.executemany("DELETE FROM events WHERE eid = ?", [(v,) for v in vids])
        conn.executemany("DELETE FROM versions WHERE vid = ?", [(v,) for v in vids])
        conn.execute("COMMIT")
        print(
            f"[6] prune {n:,} versions + events in one transaction: "
            f"{(time.perf_counter() - t0) * 1000:.1f} ms"
        )
    free = conn.execute("PRAGMA freelist_count").fetchone()[0]
    conn.execute("PRAGMA incremental_vacuum(256)").fetchall()
    after_execute = conn.execute("PRAGMA freelist_count").fetchone()[0]
    t1 = time.perf_counter()
    conn.executescript("PRAGMA incremental_vacuum(256);")
    t2 = time.perf_counter()
    left = conn.execute("PRAGMA freelist_count").fetchone()[0]
    print(
        f"    freelist {free} pages; execute('PRAGMA incremental_vacuum(256)') freed "
        f"{free - after_execute} page(s) (the sqlite3 module steps it once); "
        f"executescript freed {after_execute - left} in {(t2 - t1) * 1000:.1f} ms"
    )
    conn.close()


def check_wal_fsync(d: str) -> None:
    path = os.path.join(d, "fsync.db")
    conn = open_db(path, 16 << 20)
    conn.executescript(VERSIONS)
    times = []
    for r in range(10):
        write_load(conn, 1024, 10_000, start=r * 1024)
        t0 = time.perf_counter()
        fd = os.open(path + "-wal", os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        times.append((time.perf_counter() - t0) * 1000)
    times.sort()
    print(
        f"[7] fsync of state.db-wal after 1,024 rows: median {times[5]:.1f} ms, "
        f"max {times[-1]:.1f} ms (10 rounds)"
    )
    conn.close()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=200_000)
    ap.add_argument("--limit-mib", type=int, default=16)
    args = ap.parse_args()
    print(f"sqlite {sqlite3.sqlite_version}")
    with tempfile.TemporaryDirectory(prefix="confman-sqlite-checks-") as d:
        check_bounded(d, args.rows, args.limit_mib << 20)
        check_long_reader(d, args.limit_mib << 20)
        check_receive(d, args.rows)
        check_prune(d)
        check_wal_fsync(d)
        check_parked(d, 100_000, 0.0, 0.25, park=False)
        check_parked(d, 100_000, 0.0, 0.25, park=True)
        check_parked(d, 20_000, 0.04, 1.0, park=False)
        check_parked(d, 20_000, 0.04, 1.0, park=True)


if __name__ == "__main__":
    main()
