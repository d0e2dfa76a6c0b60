"""A logical dump of the state database: every table of ``schema.TABLE_ORDER``, rows in that
order, read inside one read transaction (docs/storage.md §7.2). A snapshot sent to a peer is
such a dump; so can a backup be (the same iterator over the same bytes).

Driven only by ``TABLE_ORDER`` and ``schema.create_schema``: no column is named here, so the
schema can change under it (``SELECT * ... ORDER BY <order>`` out, ``INSERT INTO t VALUES
(?, ...)`` with as many markers as the row has columns in).

Stream::

    MAGIC b"CONFDUMP" | u16 FORMAT
    record*: u8 kind | u32 seq | u32 length | u32 CRC32C(payload) | payload
      HEADER (seq 0): msgpack {"index", "term", "voters", "learners", "tables"}
      CHUNK  (seq 1..n): u8 table position | u32 rows | msgpack array of rows (<= ~1 MiB)
      END    (seq n+1): msgpack {"chunks", "rows": {table: count}, "digest"}

``digest`` is ``StateMachine.state_digest`` of the dumped state (SHA-256 over each table's
name and its rows, msgpack-packed), computed by the sender over the rows it streams; the
loader computes it again over the rows it inserts and refuses a mismatch, as it refuses a
bad CRC, a missing or repeated chunk, and wrong row counts.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import google_crc32c
import msgpack

from confman.node.state.schema import TABLE_ORDER, create_schema, read_meta
from confman.node.storage.files import FILE_MODE
from confman.raft.types import ConfState

__all__ = ["FORMAT", "MAGIC", "Dump", "DumpError", "DumpHeader", "load_dump"]

MAGIC = b"CONFDUMP"
FORMAT = 2
K_HEADER, K_CHUNK, K_END = 1, 2, 3
_PRELUDE = struct.Struct(">8sH")
_REC = struct.Struct(">BIII")  # kind, seq, payload length, CRC32C of the payload
_CHUNK_HEAD = struct.Struct(">BI")  # table position, rows
#: Largest rows payload of one chunk, so a chunk record is at most 1 MiB (a single larger
#: row makes a chunk of its own).
CHUNK_BYTES = (1 << 20) - 64
#: The largest record a loader accepts (a row can be larger than a chunk, not than this).
MAX_RECORD = 256 << 20


class DumpError(RuntimeError):
    """A dump stream is damaged, incomplete, or not of this schema."""


@dataclass(frozen=True, slots=True)
class DumpHeader:
    """What the dump's read transaction saw in ``meta``, and the tables it holds."""

    index: int
    term: int
    conf_state: ConfState
    tables: tuple[str, ...]


@dataclass(slots=True)
class DumpSummary:
    """Chunks, rows per table and digest of a dump (the END record's content)."""

    chunks: int = 0
    rows: dict[str, int] = field(default_factory=dict)
    digest: str = ""


def _record(kind: int, seq: int, payload: bytes) -> bytes:
    return _REC.pack(kind, seq, len(payload), google_crc32c.value(payload)) + payload


class Dump:
    """A dump of ``conn``'s database at the state one read transaction sees.

    ``Dump(conn)`` opens the transaction and reads ``header``; ``records()`` yields the
    stream's bytes (prelude and header first, one chunk at a time; memory is bounded by one
    chunk); ``close()`` ends the transaction. ``conn`` must be a connection of its own (not
    the writer's) and used by one thread at a time.
    """

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn
        if conn.in_transaction:
            raise RuntimeError("the dump's connection is inside a transaction")
        conn.execute("BEGIN")  # deferred: the first SELECT fixes the snapshot
        try:
            meta = read_meta(conn)
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        self.header = DumpHeader(
            meta.applied_index, meta.applied_term, meta.conf_state, tuple(TABLE_ORDER)
        )
        self.summary = DumpSummary()
        self._open = True

    def records(self) -> Iterator[bytes]:
        """The stream: prelude + header, chunks, end (see the module docstring)."""
        h = self.header
        head: bytes = msgpack.packb(
            {
                "index": h.index,
                "term": h.term,
                "voters": list(h.conf_state.voters),
                "learners": list(h.conf_state.learners),
                "tables": list(h.tables),
            }
        )
        yield _PRELUDE.pack(MAGIC, FORMAT) + _record(K_HEADER, 0, head)
        digest = hashlib.sha256()
        packer = msgpack.Packer(use_bin_type=True)
        seq = 0
        for pos, (table, order) in enumerate(TABLE_ORDER.items()):
            digest.update(packer.pack(table))
            count = 0
            rows: list[bytes] = []
            size = 0
            for row in self._conn.execute(f"SELECT * FROM {table} ORDER BY {order}"):
                packed = packer.pack(list(row))
                digest.update(packed)
                if rows and size + len(packed) > CHUNK_BYTES:
                    seq += 1
                    yield self._chunk(seq, pos, rows, packer)
                    rows, size = [], 0
                rows.append(packed)
                size += len(packed)
                count += 1
            if rows:
                seq += 1
                yield self._chunk(seq, pos, rows, packer)
            self.summary.rows[table] = count
        self.summary.chunks = seq
        self.summary.digest = digest.hexdigest()
        end: bytes = msgpack.packb(
            {"chunks": seq, "rows": self.summary.rows, "digest": self.summary.digest}
        )
        yield _record(K_END, seq + 1, end)

    @staticmethod
    def _chunk(seq: int, pos: int, rows: list[bytes], packer: msgpack.Packer) -> bytes:
        payload = b"".join([_CHUNK_HEAD.pack(pos, len(rows)), packer.pack_array_header(len(rows))])
        return _record(K_CHUNK, seq, payload + b"".join(rows))

    def close(self) -> None:
        """End the read transaction (idempotent)."""
        if self._open:
            self._open = False
            if self._conn.in_transaction:
                self._conn.execute("ROLLBACK")


def _read_exact(src: BinaryIO, n: int, what: str) -> bytes:
    data = src.read(n)
    if len(data) != n:
        raise DumpError(f"dump truncated in {what} ({len(data)} of {n} bytes)")
    return data


def _read_record(src: BinaryIO, seq: int) -> tuple[int, bytes]:
    kind, got_seq, length, crc = _REC.unpack(_read_exact(src, _REC.size, "a record header"))
    if got_seq != seq:
        raise DumpError(f"record {got_seq} where record {seq} was expected (missing or repeated)")
    if length > MAX_RECORD:
        raise DumpError(f"record {seq}: implausible length {length}")
    payload = _read_exact(src, length, f"record {seq}")
    if google_crc32c.value(payload) != crc:
        raise DumpError(f"record {seq}: CRC32C mismatch")
    return kind, payload


def _unpack(payload: bytes, what: str) -> Any:
    try:
        return msgpack.unpackb(payload, raw=False)
    except Exception as exc:
        raise DumpError(f"{what}: undecodable: {exc}") from exc


def _read_header(src: BinaryIO) -> DumpHeader:
    magic, version = _PRELUDE.unpack(_read_exact(src, _PRELUDE.size, "the prelude"))
    if magic != MAGIC:
        raise DumpError(f"not a Confman dump (magic {magic!r})")
    if version != FORMAT:
        raise DumpError(f"unknown dump format {version} (known: {FORMAT})")
    kind, payload = _read_record(src, 0)
    if kind != K_HEADER:
        raise DumpError(f"record 0 is of kind {kind}, not a header")
    h = _unpack(payload, "header")
    try:
        header = DumpHeader(
            int(h["index"]),
            int(h["term"]),
            ConfState(tuple(h["voters"]), tuple(h["learners"])),
            tuple(h["tables"]),
        )
    except Exception as exc:
        raise DumpError(f"header: malformed: {exc}") from exc
    if header.tables != tuple(TABLE_ORDER):
        raise DumpError(
            f"the dump holds tables {list(header.tables)}, this schema {list(TABLE_ORDER)}"
        )
    return header


def load_dump(src: BinaryIO, db_path: str | os.PathLike[str]) -> DumpHeader:
    """Build a new database at ``db_path`` (must not exist) from the dump read from ``src``.

    The database is scratch while it is built (``journal_mode=OFF, synchronous=OFF``); every
    record's CRC, the sequence, the row counts, the digest and the meta row against the
    header are checked, then it is switched to a self-contained file (``journal_mode=
    DELETE``) and fsynced. On any failure the file is removed and ``DumpError`` raised.
    """
    path = Path(db_path)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
    os.close(fd)
    try:
        header = _read_header(src)
        conn = sqlite3.connect(path, isolation_level=None)
        try:
            _load_into(conn, src, header)
        finally:
            conn.close()
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    return header


def _load_into(conn: sqlite3.Connection, src: BinaryIO, header: DumpHeader) -> None:
    conn.execute("PRAGMA page_size=8192")
    conn.execute("PRAGMA auto_vacuum=INCREMENTAL")
    conn.execute("PRAGMA journal_mode=OFF")
    conn.execute("PRAGMA synchronous=OFF")
    create_schema(conn)
    tables = list(TABLE_ORDER)
    for table in tables:  # drop the default rows create_schema made: the dump has them
        conn.execute(f"DELETE FROM {table}")
    digest = hashlib.sha256()
    packer = msgpack.Packer(use_bin_type=True)
    counts = dict.fromkeys(tables, 0)
    hashed = 0  # tables whose names are in the digest
    seq = 1
    while True:
        kind, payload = _read_record(src, seq)
        if kind == K_END:
            break
        if kind != K_CHUNK or len(payload) < _CHUNK_HEAD.size:
            raise DumpError(f"record {seq}: unexpected kind {kind}")
        pos, n = _CHUNK_HEAD.unpack_from(payload)
        if pos >= len(tables) or pos < hashed - 1:
            raise DumpError(f"chunk {seq}: table position {pos} out of order")
        rows = _unpack(payload[_CHUNK_HEAD.size :], f"chunk {seq}")
        if (
            not n
            or not isinstance(rows, list)
            or len(rows) != n
            or not all(isinstance(r, list) and r for r in rows)
        ):
            raise DumpError(f"chunk {seq}: expected {n} rows")
        while hashed <= pos:
            digest.update(packer.pack(tables[hashed]))
            hashed += 1
        for row in rows:
            digest.update(packer.pack(row))
        table = tables[pos]
        marks = ", ".join("?" * len(rows[0]))
        try:
            conn.execute("BEGIN")
            conn.executemany(f"INSERT INTO {table} VALUES ({marks})", rows)
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            raise DumpError(f"chunk {seq}: rows do not fit table {table}: {exc}") from exc
        counts[table] += n
        seq += 1
    while hashed < len(tables):
        digest.update(packer.pack(tables[hashed]))
        hashed += 1
    end = _unpack(payload, "end record")
    try:
        chunks, rows_by_table, want = int(end["chunks"]), dict(end["rows"]), str(end["digest"])
    except Exception as exc:
        raise DumpError(f"end record: malformed: {exc}") from exc
    if chunks != seq - 1:
        raise DumpError(f"the dump announces {chunks} chunks, {seq - 1} arrived")
    if rows_by_table != counts:
        raise DumpError(f"row counts differ: announced {rows_by_table}, received {counts}")
    if digest.hexdigest() != want:
        raise DumpError("state digest mismatch")
    meta = read_meta(conn)
    if (meta.applied_index, meta.applied_term, meta.conf_state) != (
        header.index,
        header.term,
        header.conf_state,
    ):
        raise DumpError(
            f"meta row at ({meta.applied_index}, {meta.applied_term}) does not match the "
            f"header ({header.index}, {header.term})"
        )
    conn.execute("PRAGMA journal_mode=DELETE")
