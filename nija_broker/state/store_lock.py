"""One writer process per store, and the checks a store's location passes before opening.

:class:`StoreLock` is an ``flock`` on a sibling ``<store>.lock`` file, held for
the life of the writer process; the kernel drops it when the process dies,
SIGKILL included, so it can never be left stuck. :func:`check_location`
refuses a read-only file or directory before SQLite creates anything.
"""

from __future__ import annotations

import fcntl
import os
from contextlib import suppress
from pathlib import Path
from typing import Self

from nija_broker.core.errors import ConfigError

__all__ = ["StoreLock", "StoreLocked", "check_location"]


class StoreLocked(ConfigError):
    """Another process (``holder_pid``) holds the store's :class:`StoreLock`."""

    def __init__(self, where: str, holder_pid: int | None) -> None:
        self.holder_pid = holder_pid
        holder = f"pid {holder_pid}" if holder_pid is not None else "another process"
        super().__init__(
            f"cannot use store {where}: it is in use by {holder} (one process writes a "
            "store: stop that one, or give this one another store.path)",
            file=where,
        )


class StoreLock:
    """The lock that makes one process the writer of a store: ``flock`` on ``<store>.lock``.

    ``flock`` because the kernel drops it with its holder's last descriptor, which
    every way a process ends closes (SIGKILL and the OOM killer included): a lock
    never outlives its process, and no stale pid file waits for a human. A sibling
    file rather than the database because SQLite holds POSIX (``fcntl``) locks on
    the database, and POSIX drops all of a process's locks on a file when *any*
    descriptor of that file closes: a second descriptor of ours on the database
    could silently unlock SQLite. ``flock`` is per open file, so a second writer in
    the same process is refused too. Taking it never waits.

    The file holds the holder's pid, for the message another process gets. It is
    removed on release, while still locked; whoever opened it just before then
    gets the lock on a file no longer at that path, sees so (the inode differs),
    and locks the path's new file instead. After a crash it stays, unlocked, and
    the next holder takes it over.
    """

    def __init__(self, where: str, lock_path: Path, fd: int) -> None:
        self.where = where
        self.lock_path = lock_path
        self._fd: int | None = fd

    @classmethod
    def acquire(cls, store_path: str | Path) -> StoreLock:
        """Take the lock at once or raise :class:`StoreLocked` (a :class:`ConfigError`).

        A read-only store or directory is refused first, before the lock file exists.
        """
        where = str(store_path)
        check_location(Path(store_path), where)
        lock_path = Path(where + ".lock")
        for _ in range(_LOCK_ATTEMPTS):
            fd = _locked_fd(where, lock_path)
            if _is_at(fd, lock_path):
                os.ftruncate(fd, 0)
                os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
                return cls(where, lock_path, fd)
            os.close(fd)  # its holder removed it as we opened it: lock the path's new file
        raise ConfigError(
            f"cannot use store {where}: its lock file {lock_path} keeps being replaced", file=where
        )

    @property
    def held(self) -> bool:
        return self._fd is not None

    def release(self) -> None:
        """Remove the lock file and give the lock up. Safe twice."""
        fd, self._fd = self._fd, None
        if fd is not None:
            with suppress(OSError):
                self.lock_path.unlink()
            os.close(fd)  # closing drops the flock

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.release()


_LOCK_ATTEMPTS = 10


def _locked_fd(where: str, lock_path: Path) -> int:
    try:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except OSError as exc:
        raise ConfigError(
            f"cannot use store {where}: cannot open its lock file {lock_path}: {exc.strerror}",
            file=where,
        ) from exc
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = _pid_in(fd)
        os.close(fd)
        raise StoreLocked(where, holder) from None
    except OSError as exc:
        os.close(fd)
        raise ConfigError(
            f"cannot use store {where}: cannot lock {lock_path}: {exc.strerror}", file=where
        ) from exc
    return fd


def _is_at(fd: int, path: Path) -> bool:
    try:
        here, there = os.fstat(fd), os.stat(path)
    except OSError:
        return False
    return (here.st_dev, here.st_ino) == (there.st_dev, there.st_ino)


def _pid_in(fd: int) -> int | None:
    # The holder writes its pid right after locking; in that instant the file may
    # still be empty (or name the previous holder, whose lock has gone with it).
    try:
        return int(os.pread(fd, 32, 0).decode().strip())
    except (OSError, ValueError):
        return None


def _writable(path: Path) -> bool:
    """Writable, and meant to be: a file or directory with every write bit off is taken as
    read-only even by root (who passes ``access()``; a sidecar in a container often runs
    as root), so an operator's ``chmod a-w`` is never overridden."""
    try:
        return os.access(path, os.W_OK) and bool(path.stat().st_mode & 0o222)
    except OSError:
        return False


def check_location(path: Path, where: str) -> bool:
    """Refuse a read-only store or directory before anything is created; True if it exists.

    Creates the missing parent directories (once the nearest existing one is writable).
    """
    if path.exists():
        if not path.is_file():
            raise ConfigError(f"cannot use store {where}: it is not a file", file=where)
        if not _writable(path):
            raise ConfigError(f"cannot use store {where}: the file is read-only", file=where)
    else:
        ancestor = path.parent
        while not ancestor.exists() and ancestor != ancestor.parent:
            ancestor = ancestor.parent
        if not _writable(ancestor):
            raise ConfigError(
                f"cannot create store {where}: the directory {ancestor} is read-only", file=where
            )
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(
                f"cannot create store {where}: {exc.strerror}: {path.parent}", file=where
            ) from exc
    if not _writable(path.parent):
        # SQLite keeps the -wal and -shm files next to the database.
        raise ConfigError(
            f"cannot use store {where}: its directory {path.parent} is read-only", file=where
        )
    return path.exists()


# --------------------------------------------------------------------------- sync store
