"""Snapshot files: consistent copies of the state database at an applied index.

Since storage format 2 a node keeps no snapshot of its own (its log is released against the
live database, docs/storage.md §6); the files here are those received from a leader, kept
until they are installed (install renames or copies them into place and they are gone),
and those an older release left (ignored and deleted once the state database is past them).

A received snapshot is a plain SQLite database, ``snapshot-<index>-<term>.db``, built from
the leader's logical dump (``confman.node.state.dump``: CRCs, row counts and digest checked
before it is kept). An older release's file, ``snapshot-<index>-<term>.snap``, is a header
followed by the bytes of a SQLite database::

    magic b"CONFSNAP" | u16 format version | u32 header length | u32 CRC32C of header
    header: msgpack {"index", "term", "voters", "learners", "size", "crc32c"}
    body: ``size`` bytes, a SQLite database whose CRC32C is ``crc32c``

Index, term and membership are read from the copy's own meta row, so a snapshot can only
describe state that was applied. Files are written under a temporary name, fsynced,
renamed and the directory fsynced; readers refuse a bad magic, an unknown version, a
truncated file or a bad checksum with ``SnapshotCorruptError``.
"""

from __future__ import annotations

import os
import re
import sqlite3
import struct
import tempfile
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import google_crc32c
import msgpack

from confman.node.state.dump import MAGIC as DUMP_MAGIC
from confman.node.state.dump import DumpError, load_dump
from confman.node.state.schema import SchemaError, read_meta
from confman.node.storage.files import DIR_MODE, FILE_MODE, private_fd
from confman.raft.types import ConfState, SnapshotMeta

MAGIC = b"CONFSNAP"
FORMAT_VERSION = 1
_PRELUDE = struct.Struct(">8sHII")  # magic, version, header length, header crc
_MAX_HEADER = 1 << 20
_CHUNK = 1 << 20
_SYNC_STEP = 8 << 20  # bytes written between two flushes of a large file
_STEP_PAUSE_S = 0.005
_NAME = re.compile(r"snapshot-(\d{20})-(\d{20})\.(snap|db)")
_TMP_PREFIX = ".tmp-"


class SnapshotCorruptError(RuntimeError):
    """A snapshot file is damaged, truncated or of an unknown format."""


@dataclass(frozen=True, slots=True)
class SnapshotInfo:
    """A snapshot file: where, at which index/term/membership, database size and CRC32C."""

    path: Path
    index: int
    term: int
    conf_state: ConfState
    size: int
    checksum: int

    @property
    def meta(self) -> SnapshotMeta:
        """The Raft core's view of this snapshot."""
        return SnapshotMeta(self.index, self.term, self.conf_state)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _crc_of(f: BinaryIO, size: int, out: BinaryIO | None = None) -> tuple[int, int]:
    """CRC32C of up to ``size`` bytes read from ``f``, and bytes read.

    With ``out`` the bytes are copied there and flushed to disk every few MiB: one large
    flush at the end would hold up every other fsync on the file system (ext4 commits its
    journal in order) for as long as it takes, the WAL's fdatasync and with it the node's
    acknowledgements included. The caller still fsyncs ``out`` at the end.
    """
    crc = 0
    done = 0
    unsynced = 0
    while done < size:
        chunk = f.read(min(_CHUNK, size - done))
        if not chunk:
            break
        crc = google_crc32c.extend(crc, chunk)
        done += len(chunk)
        if out is not None:
            out.write(chunk)
            unsynced += len(chunk)
            if unsynced >= _SYNC_STEP:
                out.flush()
                os.fdatasync(out.fileno())
                unsynced = 0
                time.sleep(_STEP_PAUSE_S)  # leave the disk to the WALs for a moment
    if out is not None:
        out.flush()
    return crc, done


def _slow_unlink(path: Path) -> None:
    """Remove a large file by shrinking it in steps first: freeing (and, on a file system
    mounted with ``discard``, trimming) hundreds of MB in one journal commit holds up every
    other fsync for tens of milliseconds."""
    try:
        fd = os.open(path, os.O_WRONLY)
    except FileNotFoundError:
        return
    try:
        size = os.fstat(fd).st_size
        while size > _SYNC_STEP:
            size -= _SYNC_STEP
            os.ftruncate(fd, size)
            os.fdatasync(fd)
            time.sleep(_STEP_PAUSE_S)
    finally:
        os.close(fd)
    path.unlink(missing_ok=True)


def _header_bytes(index: int, term: int, conf: ConfState, size: int, crc: int) -> bytes:
    header: bytes = msgpack.packb(
        {
            "index": index,
            "term": term,
            "voters": list(conf.voters),
            "learners": list(conf.learners),
            "size": size,
            "crc32c": crc,
        }
    )
    return _PRELUDE.pack(MAGIC, FORMAT_VERSION, len(header), google_crc32c.value(header)) + header


def _read_header(path: Path, f: BinaryIO) -> tuple[SnapshotInfo, int]:
    """Parse and check the header; returns the info and the offset of the body."""
    prelude = f.read(_PRELUDE.size)
    if len(prelude) < _PRELUDE.size:
        raise SnapshotCorruptError(f"{path}: truncated header ({len(prelude)} bytes)")
    magic, version, length, header_crc = _PRELUDE.unpack(prelude)
    if magic != MAGIC:
        raise SnapshotCorruptError(f"{path}: bad magic {magic!r}, not a Confman snapshot")
    if version != FORMAT_VERSION:
        raise SnapshotCorruptError(
            f"{path}: unknown snapshot format version {version} (known: {FORMAT_VERSION})"
        )
    if length > _MAX_HEADER:
        raise SnapshotCorruptError(f"{path}: header length {length} is implausible")
    raw = f.read(length)
    if len(raw) < length:
        raise SnapshotCorruptError(f"{path}: truncated header ({len(raw)} of {length} bytes)")
    if google_crc32c.value(raw) != header_crc:
        raise SnapshotCorruptError(f"{path}: header checksum mismatch")
    try:
        h: dict[str, Any] = msgpack.unpackb(raw, raw=False)
        info = SnapshotInfo(
            path,
            int(h["index"]),
            int(h["term"]),
            ConfState(tuple(h["voters"]), tuple(h["learners"])),
            int(h["size"]),
            int(h["crc32c"]),
        )
    except Exception as exc:  # a header that passed its CRC but is not ours
        raise SnapshotCorruptError(f"{path}: unreadable header: {exc}") from exc
    body_at = _PRELUDE.size + length
    actual = os.fstat(f.fileno()).st_size - body_at
    if actual != info.size:
        raise SnapshotCorruptError(
            f"{path}: database is {actual} bytes, header says {info.size} (truncated?)"
        )
    return info, body_at


def _database_info(p: Path) -> SnapshotInfo:
    """A plain database file (a received snapshot): its meta row, read-only."""
    try:
        conn = sqlite3.connect(p.resolve().as_uri() + "?mode=ro", uri=True)
        try:
            meta = read_meta(conn)
        finally:
            conn.close()
    except (SchemaError, sqlite3.DatabaseError) as exc:
        raise SnapshotCorruptError(f"{p}: database unreadable: {exc}") from exc
    size = p.stat().st_size
    return SnapshotInfo(p, meta.applied_index, meta.applied_term, meta.conf_state, size, 0)


def read_info(path: str | os.PathLike[str]) -> SnapshotInfo:
    """The header of a snapshot file, checked, without reading the database bytes."""
    p = Path(path)
    if p.suffix == ".db":
        return _database_info(p)
    with open(p, "rb") as f:
        return _read_header(p, f)[0]


def verify(path: str | os.PathLike[str]) -> SnapshotInfo:
    """Check a whole snapshot file; SnapshotCorruptError naming the file and the fault."""
    p = Path(path)
    if p.suffix == ".db":
        return _database_info(p)  # its rows were checked (CRCs, digest) when it was built
    with open(p, "rb") as f:
        info, _ = _read_header(p, f)
        crc, _ = _crc_of(f, info.size)
    if crc != info.checksum:
        raise SnapshotCorruptError(f"{p}: database checksum mismatch")
    return info


def iter_chunks(path: str | os.PathLike[str], chunk_size: int = _CHUNK) -> Iterator[bytes]:
    """The bytes of a snapshot file in chunks (to send it to a peer)."""
    with open(path, "rb") as f:
        while chunk := f.read(chunk_size):
            yield chunk


def install_snapshot(
    snapshot_path: str | os.PathLike[str], db_path: str | os.PathLike[str]
) -> SnapshotInfo:
    """Atomically replace the database at ``db_path`` with a verified snapshot.

    Every connection to ``db_path`` must be closed. The body is copied and checked in one
    pass, its meta row compared with the header, then SQLite's -wal/-shm of the old
    database removed (after a checkpoint) and the copy renamed over it. A received
    snapshot (a plain ``.db`` database, fsynced when it was built) is renamed into place:
    nothing is copied and the file is gone afterwards.
    """
    src = Path(snapshot_path)
    db = Path(db_path)
    if src.suffix == ".db":
        info = _database_info(src)
        _retire_database(db)
        os.replace(src, db)
        _fsync_dir(db.parent)
        return info
    staging = db.with_name(db.name + ".installing")
    try:
        fd = os.open(staging, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE)
        with open(src, "rb") as f, os.fdopen(private_fd(fd), "wb") as out:
            info, _ = _read_header(src, f)
            crc, copied = _crc_of(f, info.size, out)
            if copied != info.size or crc != info.checksum:
                raise SnapshotCorruptError(f"{src}: database checksum mismatch")
            out.flush()
            os.fsync(out.fileno())
        _check_copy(src, staging, info)
        _retire_database(db)
        os.replace(staging, db)
        _fsync_dir(db.parent)
    finally:
        staging.unlink(missing_ok=True)
    return info


def _check_copy(src: Path, staging: Path, info: SnapshotInfo) -> None:
    conn = sqlite3.connect(staging.resolve().as_uri() + "?mode=ro", uri=True)
    try:
        meta = read_meta(conn)
    except (SchemaError, sqlite3.DatabaseError) as exc:
        raise SnapshotCorruptError(f"{src}: database unreadable: {exc}") from exc
    finally:
        conn.close()
    if (meta.applied_index, meta.applied_term, meta.conf_state) != (
        info.index,
        info.term,
        info.conf_state,
    ):
        raise SnapshotCorruptError(
            f"{src}: header says index {info.index} term {info.term}, database holds "
            f"index {meta.applied_index} term {meta.applied_term}"
        )


def _retire_database(db: Path) -> None:
    """Fold the old database's WAL into it and delete -wal/-shm, so none outlives it.

    The WAL is deleted only when the TRUNCATE checkpoint completed (every frame is in the
    fsynced database): a checkpoint that another connection kept busy leaves frames in the
    WAL that the old database needs until the new one replaces it, so that is an error.
    """
    if db.exists():
        try:
            conn = sqlite3.connect(db)
            try:
                busy, _, _ = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
            finally:
                conn.close()
        except sqlite3.DatabaseError:
            busy = 0  # a damaged old database is being replaced anyway
        if busy:
            raise RuntimeError(
                f"{db}: another connection kept its WAL from being checkpointed; "
                "not replacing the database while its WAL still holds transactions"
            )
    for suffix in ("-wal", "-shm"):
        db.with_name(db.name + suffix).unlink(missing_ok=True)


class SnapshotReceiver:
    """Receives a snapshot file chunk by chunk into its store; verified before it is kept."""

    def __init__(self, store: SnapshotStore) -> None:
        self._store = store
        fd, name = tempfile.mkstemp(prefix=_TMP_PREFIX, suffix=".recv", dir=store.dir)
        self._path = Path(name)
        self._file: BinaryIO | None = os.fdopen(fd, "wb")

    def write(self, chunk: bytes) -> None:
        if self._file is None:
            raise RuntimeError("snapshot receiver is closed")
        self._file.write(chunk)

    def finish(self) -> SnapshotInfo:
        """Verify what was received and keep it under its proper name: a logical dump is
        built into a database (the stream file is deleted), a snapshot file kept as is."""
        if self._file is None:
            raise RuntimeError("snapshot receiver is closed")
        try:
            self._file.close()
            self._file = None
            with open(self._path, "rb") as f:
                is_dump = f.read(len(DUMP_MAGIC)) == DUMP_MAGIC
            if is_dump:
                return self._build()
            fd = os.open(self._path, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
            info = verify(self._path)
        except BaseException:
            self.abort()
            raise
        return self._store._keep(self._path, info)

    def _build(self) -> SnapshotInfo:
        """Load the received dump into a new database next to it, fsynced, then keep it."""
        db = self._path.with_suffix(".db")
        try:
            with open(self._path, "rb") as f:
                header = load_dump(f, db)
        except DumpError as exc:
            raise SnapshotCorruptError(f"received snapshot refused: {exc}") from exc
        finally:
            self._path.unlink(missing_ok=True)
        size = db.stat().st_size
        info = SnapshotInfo(db, header.index, header.term, header.conf_state, size, 0)
        try:
            return self._store._keep(db, info)
        finally:
            db.unlink(missing_ok=True)

    def abort(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        self._path.unlink(missing_ok=True)


class SnapshotStore:
    """The snapshot files of one node in ``dir``, keeping the newest ``retain``."""

    def __init__(self, dir: str | os.PathLike[str], retain: int = 3) -> None:
        if retain < 1:
            raise ValueError("retain must be >= 1")
        self.dir = Path(dir)
        self.retain = retain
        self.dir.mkdir(DIR_MODE, parents=True, exist_ok=True)
        if self.dir.stat().st_mode & 0o777 != DIR_MODE:  # made earlier, or under a umask
            self.dir.chmod(DIR_MODE)
        for stale in self.dir.glob(_TMP_PREFIX + "*"):
            stale.unlink(missing_ok=True)

    def _paths(self) -> list[tuple[int, Path]]:
        found = []
        for p in self.dir.iterdir():
            m = _NAME.fullmatch(p.name)
            if m:
                found.append((int(m.group(1)), p))
        return sorted(found)

    def snapshots(self) -> list[SnapshotInfo]:
        """Headers of the kept snapshots, oldest first."""
        return [read_info(p) for _, p in self._paths()]

    def latest(self) -> SnapshotInfo | None:
        """Header of the newest snapshot (checked; the body is checked on install)."""
        paths = self._paths()
        return read_info(paths[-1][1]) if paths else None

    def create(self, db_path: str | os.PathLike[str]) -> SnapshotInfo:
        """Snapshot the live database at ``db_path`` (safe from a worker thread).

        The copy is taken with SQLite's backup API in one step on its own connection: in
        WAL mode that is a read transaction, which never blocks the writer.
        """
        fd, tmp_name = tempfile.mkstemp(prefix=_TMP_PREFIX, suffix=".db", dir=self.dir)
        os.close(fd)
        copy = Path(tmp_name)
        try:
            source = sqlite3.connect(Path(db_path).resolve().as_uri() + "?mode=ro", uri=True)
            target = sqlite3.connect(copy)
            try:
                # The copy is scratch (only the snapshot file below is kept): no fsync of it,
                # and it is unlinked before the kernel would write it back.
                target.execute("PRAGMA synchronous=OFF")
                source.backup(target)
                target.execute("PRAGMA journal_mode=DELETE")  # a self-contained file
                meta = read_meta(target)
            finally:
                target.close()
                source.close()
            latest = self.latest()
            if latest is not None and latest.index == meta.applied_index:
                return latest
            return self._write(copy, meta.applied_index, meta.applied_term, meta.conf_state)
        finally:
            copy.unlink(missing_ok=True)

    def _write(self, copy: Path, index: int, term: int, conf: ConfState) -> SnapshotInfo:
        size = copy.stat().st_size
        with open(copy, "rb") as f:
            crc, _ = _crc_of(f, size)
        fd, tmp_name = tempfile.mkstemp(prefix=_TMP_PREFIX, suffix=".snap", dir=self.dir)
        tmp = Path(tmp_name)
        try:
            with os.fdopen(fd, "wb") as out, open(copy, "rb") as f:
                out.write(_header_bytes(index, term, conf, size, crc))
                _crc_of(f, size, out)
                os.fsync(out.fileno())
            return self._keep(tmp, SnapshotInfo(tmp, index, term, conf, size, crc))
        finally:
            tmp.unlink(missing_ok=True)

    def _keep(self, tmp: Path, info: SnapshotInfo) -> SnapshotInfo:
        """Rename a complete, fsynced file to its final name and apply retention."""
        suffix = ".db" if tmp.suffix == ".db" else ".snap"
        final = self.dir / f"snapshot-{info.index:020d}-{info.term:020d}{suffix}"
        os.replace(tmp, final)
        _fsync_dir(self.dir)
        paths = self._paths()
        for _, old in paths[: max(0, len(paths) - self.retain)]:
            if old != final:
                _slow_unlink(old)
        return SnapshotInfo(final, info.index, info.term, info.conf_state, info.size, info.checksum)

    def verify(self, path: str | os.PathLike[str]) -> SnapshotInfo:
        """See module-level ``verify``."""
        return verify(path)

    def install(
        self, snapshot_path: str | os.PathLike[str], db_path: str | os.PathLike[str]
    ) -> SnapshotInfo:
        """See ``install_snapshot``; use ``StateMachine.restore`` for a live machine."""
        return install_snapshot(snapshot_path, db_path)

    def chunks(self, info: SnapshotInfo, chunk_size: int = _CHUNK) -> Iterator[bytes]:
        """The bytes of a kept snapshot, to stream to a peer."""
        return iter_chunks(info.path, chunk_size)

    def receiver(self) -> SnapshotReceiver:
        """Start receiving a snapshot from a peer (``write`` chunks, then ``finish``)."""
        return SnapshotReceiver(self)

    def receive(self, chunks: Iterable[bytes]) -> SnapshotInfo:
        """Receive a whole snapshot from ``chunks``; verified, then kept."""
        rx = self.receiver()
        try:
            for chunk in chunks:
                rx.write(chunk)
        except BaseException:
            rx.abort()
            raise
        return rx.finish()
