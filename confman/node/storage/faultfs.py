"""An in-memory ``FileSystem`` that simulates power loss, for crash tests of the WAL.

Model (what a crash may do, chosen by seeded randomness in ``crash()``):

- File content: each file keeps its last synced content plus the writes and truncations
  made since. A crash keeps a random prefix of those (each file independently, so across
  files the survivors look reordered); the first write not kept may be torn: a prefix of
  it survives, possibly followed by garbage (zeros or random bytes, as when a file's size
  reached the disk before its data).
- Directory entries: each directory keeps its last synced listing plus the creations,
  renames and removals made since; a crash keeps a random prefix of those, so a creation
  or removal not followed by ``sync_dir`` may be undone. Directories themselves are
  created durably by ``make_dirs``.

``crash_after=n`` makes the (n+1)-th mutating operation (write, sync, truncate, create,
rename, remove, sync_dir) raise ``SimulatedCrash`` before it takes effect, and every later
operation too: the "process" is dead. ``crash()`` then returns a fresh ``FaultFS`` holding
what survived, on which the WAL can be reopened.
"""

from __future__ import annotations

import os
import random
from dataclasses import dataclass, field
from typing import Any, cast

__all__ = ["FaultFS", "SimulatedCrash"]


class SimulatedCrash(Exception):
    """The crash point set by ``crash_after`` was reached."""


@dataclass(eq=False)
class _Inode:
    durable: bytes = b""
    data: bytearray = field(default_factory=bytearray)
    # Content operations since the last sync: ("w", bytes) or ("t", size).
    pending: list[tuple[str, bytes | int]] = field(default_factory=list)


# Directory operations since the last sync_dir: ("create", name, inode), ("remove", name),
# ("rename", src, dst).
_DirOp = tuple[Any, ...]


class _FaultFile:
    __slots__ = ("_fs", "_inode")

    def __init__(self, fs: FaultFS, inode: _Inode) -> None:
        self._fs = fs
        self._inode = inode

    def write(self, data: bytes) -> None:
        self._fs._step()
        data = bytes(data)
        self._inode.data += data
        self._inode.pending.append(("w", data))

    def sync(self) -> None:
        self._fs._step()
        self._inode.durable = bytes(self._inode.data)
        self._inode.pending.clear()

    def write_sync(self, data: bytes) -> None:
        self.write(data)  # two steps, so a simulated crash may fall between them
        self.sync()

    def truncate(self, size: int) -> None:
        self._fs._step()
        del self._inode.data[size:]
        self._inode.pending.append(("t", size))

    def close(self) -> None:
        pass


class FaultFS:
    """A fault-injecting in-memory file system (see the module docstring)."""

    def __init__(self, crash_after: int | None = None) -> None:
        self.crash_after = crash_after
        self.ops = 0  # mutating operations performed so far
        self.crashed = False
        self._dirs: set[str] = {"/"}
        self._names: dict[str, dict[str, _Inode]] = {"/": {}}  # current listings
        self._durable: dict[str, dict[str, _Inode]] = {"/": {}}  # synced listings
        self._dir_ops: dict[str, list[_DirOp]] = {"/": []}

    # -- crash control ---------------------------------------------------------------
    def _step(self) -> None:
        if self.crashed:
            raise SimulatedCrash("file system already crashed")
        if self.crash_after is not None and self.ops >= self.crash_after:
            self.crashed = True
            raise SimulatedCrash(f"crash after {self.ops} operations")
        self.ops += 1

    def crash(self, seed: int | random.Random = 0) -> FaultFS:
        """Power loss now: a new file system holding what survived; this one is dead."""
        rng = seed if isinstance(seed, random.Random) else random.Random(seed)
        self.crashed = True
        survivors: dict[int, bytes] = {}

        def content(inode: _Inode) -> bytes:
            if id(inode) not in survivors:
                survivors[id(inode)] = _surviving_content(inode, rng)
            return survivors[id(inode)]

        out = FaultFS()
        out._dirs = set(self._dirs)
        for d in sorted(self._dirs):
            listing = dict(self._durable[d])
            ops = self._dir_ops[d]
            for op in ops[: rng.randint(0, len(ops))]:
                _apply_dir_op(listing, op)
            new = {n: _Inode(content(i), bytearray(content(i))) for n, i in listing.items()}
            out._names[d] = new
            out._durable[d] = dict(new)
            out._dir_ops[d] = []
        return out

    # -- FileSystem ------------------------------------------------------------------
    def create(self, path: str) -> _FaultFile:
        d, name = self._split(path)
        if name in self._names[d]:
            raise FileExistsError(path)
        self._step()
        inode = _Inode()
        self._names[d][name] = inode
        self._dir_ops[d].append(("create", name, inode))
        return _FaultFile(self, inode)

    def open_append(self, path: str) -> _FaultFile:
        return _FaultFile(self, self._lookup(path))

    def read(self, path: str) -> bytes:
        return bytes(self._lookup(path).data)

    def list_dir(self, path: str) -> list[str]:
        d = _norm(path)
        if d not in self._dirs:
            raise FileNotFoundError(path)
        return sorted(self._names[d])

    def make_dirs(self, path: str) -> None:
        d = _norm(path)
        while d not in self._dirs:
            self._dirs.add(d)
            self._names[d] = {}
            self._durable[d] = {}
            self._dir_ops[d] = []
            d = os.path.dirname(d)

    def rename(self, src: str, dst: str) -> None:
        d, s = self._split(src)
        d2, t = self._split(dst)
        if d != d2:
            raise ValueError("FaultFS only renames within one directory")
        inode = self._lookup(src)
        self._step()
        del self._names[d][s]
        self._names[d][t] = inode
        self._dir_ops[d].append(("rename", s, t))

    def remove(self, path: str) -> None:
        d, name = self._split(path)
        self._lookup(path)
        self._step()
        del self._names[d][name]
        self._dir_ops[d].append(("remove", name))

    def sync_dir(self, path: str) -> None:
        d = _norm(path)
        if d not in self._dirs:
            raise FileNotFoundError(path)
        self._step()
        self._durable[d] = dict(self._names[d])
        self._dir_ops[d].clear()

    # -- helpers for tests -----------------------------------------------------------
    def files(self, path: str) -> dict[str, bytes]:
        """Current content of every file in directory ``path``, by name."""
        d = _norm(path)
        return {name: bytes(i.data) for name, i in sorted(self._names[d].items())}

    def put(self, path: str, data: bytes) -> None:
        """Replace (or create) a file's content durably, name included: test setup only."""
        d, name = self._split(path)
        inode = _Inode(durable=bytes(data), data=bytearray(data))
        self._names[d][name] = inode
        self._durable[d][name] = inode

    # -- internals -------------------------------------------------------------------
    def _split(self, path: str) -> tuple[str, str]:
        p = _norm(path)
        d, name = os.path.dirname(p), os.path.basename(p)
        if d not in self._dirs:
            raise FileNotFoundError(path)
        return d, name

    def _lookup(self, path: str) -> _Inode:
        d, name = self._split(path)
        try:
            return self._names[d][name]
        except KeyError:
            raise FileNotFoundError(path) from None


def _norm(path: str) -> str:
    return os.path.normpath(os.path.join("/", path))


def _apply_dir_op(listing: dict[str, _Inode], op: _DirOp) -> None:
    if op[0] == "create":
        listing[op[1]] = op[2]
    elif op[0] == "remove":
        listing.pop(op[1], None)
    else:
        inode = listing.pop(op[1], None)
        if inode is not None:
            listing[op[2]] = inode


def _surviving_content(inode: _Inode, rng: random.Random) -> bytes:
    """The synced content plus a random prefix of later operations, the next maybe torn."""
    data = bytearray(inode.durable)
    ops = inode.pending
    kept = rng.randint(0, len(ops))
    for kind, arg in ops[:kept]:
        if kind == "w":
            data += cast(bytes, arg)
        else:
            del data[cast(int, arg) :]
    if kept < len(ops) and ops[kept][0] == "w" and rng.random() < 0.5:
        torn: bytes = ops[kept][1]  # type: ignore[assignment]
        data += torn[: rng.randint(0, len(torn) - 1)] if torn else b""
        garbage = rng.choice(("none", "zeros", "random"))
        n = rng.randint(1, max(1, len(torn)))
        if garbage == "zeros":
            data += bytes(n)
        elif garbage == "random":
            data += rng.randbytes(n)
    return bytes(data)
