"""The folders a stage writes, guarded: one run at a time writes a DATA_DIR or RUN_DIR (a lock),
and a DATA_DIR being rewritten says so until it is whole again (a marker every later stage
checks through :func:`maskdet.manifest.read_manifest`).

The lock is an ``flock`` on ``FOLDER/.maskdet.lock``: the system releases it when its process
ends, even by ``kill -9``, so a stale lock never blocks a rerun. A second run is refused at once
with the process that holds the lock. Readers (training reads a DATA_DIR) share the lock; a
writer needs it alone. Within one process the lock is re-entrant.
"""

from __future__ import annotations

import errno
import fcntl
import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

LOCK_NAME = ".maskdet.lock"
INCOMPLETE_NAME = ".incomplete"

_HELD: dict[str, list] = {}  # resolved folder -> [fd, exclusive, depth]


class FolderBusy(RuntimeError):
    """Another process holds the folder's lock; the message names it."""


def _holder(fd: int, folder: Path) -> str:
    text = os.pread(fd, 4096, 0).decode("utf-8", "replace").strip()
    pid, _, rest = text.partition(" ")
    try:
        os.kill(int(pid), 0)
    except (ValueError, OSError):
        return "another process"
    return f"process {pid} ({rest})" if rest else f"process {pid}"


def _describe(what: str) -> bytes:
    cmd = " ".join(Path(sys.argv[0]).name.split() + sys.argv[1:])[:200] if sys.argv else ""
    return f"{os.getpid()} {what}, since {time.strftime('%H:%M:%S')}: {cmd}\n".encode()


def _open_lock(folder: Path) -> int | None:
    path = folder / LOCK_NAME
    try:
        return os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as err:
        if err.errno not in (errno.EROFS, errno.EACCES, errno.EPERM):
            raise
    try:
        return os.open(path, os.O_RDONLY)
    except OSError:
        return None


def _take(fd: int, folder: Path, shared: bool, what: str) -> None:
    try:
        fcntl.flock(fd, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
    except BlockingIOError:
        raise FolderBusy(
            f"{folder} is in use by {_holder(fd, folder)}: wait for it to finish (or stop it), "
            "then run again; two runs must not write one folder at once"
        ) from None
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, _describe(what), 0)
    except OSError:
        pass  # a read-only lock file still locks


@contextmanager
def locked(folder: str | os.PathLike, what: str, shared: bool = False) -> Iterator[None]:
    """Hold ``folder``'s lock while the block runs (``shared`` for readers); ``what`` says what
    the holder does, for the message another run gets. A folder that cannot hold a lock file
    (read-only) is not locked: nothing of ours can write it."""
    folder = Path(folder)
    if not shared:
        folder.mkdir(parents=True, exist_ok=True)
    elif not folder.is_dir():
        yield
        return
    key = str(folder.resolve())
    held = _HELD.get(key)
    if held is not None:  # re-entered in this process
        upgrade = held[1] is False and not shared
        if upgrade:
            _take(held[0], folder, False, what)  # converts this process's shared lock
            held[1] = True
        held[2] += 1
        try:
            yield
        finally:
            held[2] -= 1
            if upgrade:
                fcntl.flock(held[0], fcntl.LOCK_SH)
                held[1] = False
        return
    fd = _open_lock(folder)
    if fd is None:
        yield
        return
    try:
        _take(fd, folder, shared, what)
    except BaseException:
        os.close(fd)
        raise
    _HELD[key] = [fd, not shared, 1]
    try:
        yield
    finally:
        del _HELD[key]
        os.close(fd)  # releases the lock


def mark_incomplete(folder: str | os.PathLike, stage: str) -> None:
    """Say that ``stage`` is rewriting ``folder`` (``stage`` names how to run it again)."""
    path = Path(folder) / INCOMPLETE_NAME
    tmp = path.with_name(path.name + ".part")
    tmp.write_text(f"{stage}\n")
    os.replace(tmp, path)


def clear_incomplete(folder: str | os.PathLike) -> None:
    (Path(folder) / INCOMPLETE_NAME).unlink(missing_ok=True)


def incomplete(folder: str | os.PathLike) -> str | None:
    """The stage that was rewriting ``folder`` and did not finish, or None."""
    try:
        return (Path(folder) / INCOMPLETE_NAME).read_text().strip() or "a stage"
    except FileNotFoundError:
        return None
