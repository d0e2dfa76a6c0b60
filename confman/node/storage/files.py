"""The small file-system surface the WAL uses, and its real (OS) implementation.

Keeping the WAL's I/O behind this interface lets tests substitute ``faultfs.FaultFS``, which
simulates power loss. Paths are plain strings. Durability contract (as on Linux):

- ``AppendFile.write`` puts bytes in the page cache; only ``sync`` (fdatasync) makes them
  durable.
- Creating, renaming and removing a file change its directory; only ``sync_dir`` on that
  directory makes the change durable.

Files are created 0600 and directories 0700 whatever the umask (they hold the cluster's
data); a file opened for appending is tightened to 0600 if it was looser.
"""

from __future__ import annotations

import contextlib
import os
from typing import Protocol

__all__ = [
    "DIR_MODE",
    "FILE_MODE",
    "AppendFile",
    "FileSystem",
    "OSFileSystem",
    "private_database",
    "private_fd",
]

_fdatasync = getattr(os, "fdatasync", os.fsync)
_RWF_DSYNC: int | None = getattr(os, "RWF_DSYNC", None)  # Linux 4.7+
#: Modes of what the node creates: readable by its own user only.
FILE_MODE = 0o600
DIR_MODE = 0o700
_CLOEXEC = getattr(os, "O_CLOEXEC", 0)


def private_fd(fd: int) -> int:
    """``fd`` after making its file 0600 (open's mode argument is masked by the umask)."""
    if os.fstat(fd).st_mode & 0o777 != FILE_MODE:
        os.fchmod(fd, FILE_MODE)
    return fd


def private_database(path: str) -> None:
    """Create the SQLite database ``path`` 0600 if missing, else tighten it and any -wal/-shm
    left by an earlier run to 0600. SQLite gives the -wal/-shm it creates the database's
    mode, so the database's is enough for them."""
    os.close(private_fd(os.open(path, os.O_RDWR | os.O_CREAT | _CLOEXEC, FILE_MODE)))
    for suffix in ("-wal", "-shm"):
        with contextlib.suppress(FileNotFoundError):
            os.close(private_fd(os.open(path + suffix, os.O_RDONLY | _CLOEXEC)))


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
        fd = os.open(path, self._APPEND | os.O_CREAT | os.O_EXCL, FILE_MODE)
        return _OSAppendFile(private_fd(fd))

    def open_append(self, path: str) -> AppendFile:
        return _OSAppendFile(private_fd(os.open(path, self._APPEND)))

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
            os.mkdir(path, DIR_MODE)
        except FileExistsError:
            return
        os.chmod(path, DIR_MODE)  # mkdir's mode is masked by the umask
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
