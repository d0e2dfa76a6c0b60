"""The small file-system surface the WAL uses, and its real (OS) implementation.

Keeping the WAL's I/O behind this interface lets tests substitute ``faultfs.FaultFS``, which
simulates power loss. Paths are plain strings. Durability contract (as on Linux):

- ``AppendFile.write`` puts bytes in the page cache; only ``sync`` (fdatasync) makes them
  durable.
- Creating, renaming and removing a file change its directory; only ``sync_dir`` on that
  directory makes the change durable.
"""

from __future__ import annotations

import os
from typing import Protocol

__all__ = ["AppendFile", "FileSystem", "OSFileSystem"]

_fdatasync = getattr(os, "fdatasync", os.fsync)
_RWF_DSYNC: int | None = getattr(os, "RWF_DSYNC", None)  # Linux 4.7+


class AppendFile(Protocol):
    """A file open for appending."""

    def write(self, data: bytes) -> None:
        """Append all of ``data`` (not yet durable)."""
        ...

    def sync(self) -> None:
        """Make everything written so far durable (fdatasync)."""
        ...

    def write_sync(self, data: bytes) -> None:
        """``write`` then ``sync``, in one system call where the OS allows it. Only for a
        file without unsynced earlier writes (an implementation may not cover them)."""
        ...

    def truncate(self, size: int) -> None:
        """Cut the file to ``size`` bytes (durable after ``sync``)."""
        ...

    def close(self) -> None: ...


class FileSystem(Protocol):
    """Operations on files and directories."""

    def create(self, path: str) -> AppendFile:
        """Create a new, empty file (fails if it exists) and open it for appending."""
        ...

    def open_append(self, path: str) -> AppendFile:
        """Open an existing file for appending."""
        ...

    def read(self, path: str) -> bytes:
        """The whole content of a file."""
        ...

    def list_dir(self, path: str) -> list[str]:
        """Names (not paths) of the entries of a directory."""
        ...

    def make_dirs(self, path: str) -> None:
        """Create a directory and its parents if missing, durably."""
        ...

    def rename(self, src: str, dst: str) -> None:
        """Atomically rename ``src`` to ``dst`` (same directory)."""
        ...

    def remove(self, path: str) -> None: ...

    def sync_dir(self, path: str) -> None:
        """Make creations, renames and removals in directory ``path`` durable."""
        ...


class _OSAppendFile:
    __slots__ = ("_fd",)

    def __init__(self, fd: int) -> None:
        self._fd = fd

    def write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            n = os.write(self._fd, view)
            view = view[n:]

    def sync(self) -> None:
        _fdatasync(self._fd)

    def write_sync(self, data: bytes) -> None:
        """Append ``data`` and make it durable in one system call (RWF_DSYNC), so the
        calling thread gives up and retakes the GIL once rather than twice.

        Only for a file without unsynced earlier writes (they are not covered).
        """
        if _RWF_DSYNC is None:
            self.write(data)
            self.sync()
            return
        view = memoryview(data)
        while view:  # O_APPEND: the offset is ignored, each call appends
            n = os.pwritev(self._fd, [view], 0, _RWF_DSYNC)
            view = view[n:]

    def truncate(self, size: int) -> None:
        os.ftruncate(self._fd, size)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


class OSFileSystem:
    """The real file system."""

    _APPEND = os.O_WRONLY | os.O_APPEND | getattr(os, "O_CLOEXEC", 0)

    def create(self, path: str) -> AppendFile:
        return _OSAppendFile(os.open(path, self._APPEND | os.O_CREAT | os.O_EXCL, 0o644))

    def open_append(self, path: str) -> AppendFile:
        return _OSAppendFile(os.open(path, self._APPEND))

    def read(self, path: str) -> bytes:
        with open(path, "rb") as f:
            return f.read()

    def list_dir(self, path: str) -> list[str]:
        return os.listdir(path)

    def make_dirs(self, path: str) -> None:
        path = os.path.abspath(path)
        if os.path.isdir(path):
            return
        parent = os.path.dirname(path)
        self.make_dirs(parent)
        try:
            os.mkdir(path)
        except FileExistsError:
            return
        self.sync_dir(parent)

    def rename(self, src: str, dst: str) -> None:
        os.rename(src, dst)

    def remove(self, path: str) -> None:
        os.remove(path)

    def sync_dir(self, path: str) -> None:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
