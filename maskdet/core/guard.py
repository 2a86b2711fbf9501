"""The folders a stage writes, guarded: one run at a time writes a DATA_DIR or RUN_DIR (a lock),
and a DATA_DIR being rewritten says so until it is whole again (a marker every later stage
checks through :func:`maskdet.core.manifest.read_manifest`).

Outputs are guarded here too (:func:`check_output`, :func:`writing`): no output may be an input
or lie inside an input folder, no run overwrites a file it did not make (``--overwrite`` says it
may), and every output is written under a temporary name and renamed when whole. A stage that
replaces a folder's contents first checks that the folder is its own (:func:`claim_folder`).
Every file is checked with ``stat`` before it is read (:func:`check_regular`,
:func:`read_limited`): a FIFO or ``/dev/zero`` is never opened. :func:`printable` is a file
name as text any file or terminal takes.

The lock is an ``flock`` on ``FOLDER/.maskdet.lock``: the system releases it when its process
ends, even by ``kill -9``, so a stale lock never blocks a rerun. A second run is refused at once
with the process that holds the lock. Readers (training reads a DATA_DIR) share the lock; a
writer needs it alone. Within one process the lock is re-entrant.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import stat
import sys
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from .errors import UsageError

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


# ------------------------------------------------------------------------------ outputs

OUTPUTS_RECORD = ".maskdet-outputs.json"
"""``FOLDER/.maskdet-outputs.json``: the files a command of this project wrote in ``FOLDER``
(name -> size and modification time). An existing output is replaced only when it is one of
these, unchanged since: a file the project did not make is never overwritten without
``--overwrite``."""
OVERWRITE_HINT = "give another name, or add --overwrite to replace it"


class OutputRefused(UsageError):
    """An output path that would harm a file: an input, inside an input folder, a folder, a
    special file, or a file this project did not make. A usage error (exit 2)."""


class UnsafeFile(ValueError):
    """A file that is not a regular file, or larger than a reader's limit; never opened."""


def printable(name: str | os.PathLike | bytes) -> str:
    """A file name as text any UTF-8 file or terminal accepts: bytes that are not UTF-8 (an old
    camera card, a Windows zip, an ASCII locale) become ``\\xNN`` escapes; anything else is
    unchanged."""
    raw = name if isinstance(name, bytes) else os.fsencode(os.fspath(name))
    return raw.decode("utf-8", "backslashreplace")


def check_regular(path: str | os.PathLike, max_bytes: int | None = None, what: str = "file") -> int:
    """The size of ``path`` after ``stat``: a regular file (links followed) of at most
    ``max_bytes``, else :class:`UnsafeFile` (a FIFO, a device such as ``/dev/zero``, a folder,
    a socket is never opened: reading one hangs or never ends). ``OSError`` when it is missing."""
    st = os.stat(path)
    if not stat.S_ISREG(st.st_mode):
        raise UnsafeFile(f"not a regular file ({_kind(st.st_mode)}): not read")
    if max_bytes is not None and st.st_size > max_bytes:
        raise UnsafeFile(
            f"{what} too large ({st.st_size >> 20} MB, limit {max_bytes >> 20} MB): not read"
        )
    return st.st_size


def _kind(mode: int) -> str:
    kinds = [
        (stat.S_ISDIR, "a folder"),
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISSOCK, "a socket"),
    ]
    return next((name for test, name in kinds if test(mode)), "a special file")


def read_limited(path: str | os.PathLike, max_bytes: int, what: str = "file") -> bytes:
    """The bytes of a regular file of at most ``max_bytes`` (checked with ``stat`` first, and
    read no further than the limit, should it grow meanwhile)."""
    check_regular(path, max_bytes, what)
    with open(path, "rb") as fh:
        data = fh.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise UnsafeFile(f"{what} too large (over {max_bytes >> 20} MB): not read")
    return data


def _same(a: str, b: str) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def _record_path(path: Path) -> Path:
    return path.parent / OUTPUTS_RECORD


def _recorded(path: Path) -> dict:
    try:
        return json.loads(_record_path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def made_here(path: str | os.PathLike) -> bool:
    """True when ``path`` is a file this project wrote (see :data:`OUTPUTS_RECORD`), unchanged
    since."""
    path = Path(path)
    entry = _recorded(path).get(printable(path.name))
    try:
        st = path.stat()
    except OSError:
        return False
    return bool(entry) and entry == [st.st_size, st.st_mtime_ns]


def remember(path: str | os.PathLike) -> None:
    """Add ``path`` (just written) to its folder's record of outputs, atomically."""
    path = Path(path)
    record = _record_path(path)
    try:
        folder = os.open(path.parent, os.O_RDONLY)
    except OSError:
        return
    try:
        fcntl.flock(folder, fcntl.LOCK_EX)  # two runs recording outputs in one folder take turns
        try:
            entries = _recorded(path)
            st = path.stat()
            entries[printable(path.name)] = [st.st_size, st.st_mtime_ns]
            entries = {k: v for k, v in entries.items() if (path.parent / k).exists()}
            tmp = record.with_name(f"{record.name}.{os.getpid()}.part")
            tmp.write_text(json.dumps(entries, indent=0, sort_keys=True), encoding="utf-8")
            os.replace(tmp, record)
        except OSError:
            pass  # a folder that cannot hold the record: the next run asks for --overwrite
    finally:
        os.close(folder)


def check_output(
    path: str | os.PathLike,
    inputs: Iterable[str | os.PathLike] = (),
    overwrite: bool = False,
    what: str = "--out",
) -> Path:
    """Refuse an output that would harm a file, before any work (:class:`OutputRefused`):
    ``path`` is one of ``inputs`` (the same file by inode: a link, a hard link, another
    spelling) or inside an input folder; it is a folder or a special file; or it exists and
    this project did not write it (:func:`made_here`) and ``overwrite`` is off. Its folder is
    made; ``OSError`` when it cannot be."""
    path = Path(path)
    real = os.path.realpath(path)
    for src in inputs:
        src_real = os.path.realpath(src)
        if real == src_real or _same(path, src):
            raise OutputRefused(f"{what} {path} is the input {src}: it would be overwritten")
        if os.path.isdir(src_real) and Path(real).is_relative_to(src_real):
            raise OutputRefused(
                f"{what} {path} is inside the input folder {src}: write it outside the inputs"
            )
    if os.path.lexists(path):
        if not os.path.exists(path) or not os.path.isfile(path):
            kind = "a dangling link" if not os.path.exists(path) else _kind(os.stat(path).st_mode)
            raise OutputRefused(f"cannot write {what} {path}: it is {kind}, not a file")
        if not overwrite and not made_here(path):
            raise OutputRefused(
                f"{what} {path} already exists and was not written by maskdet: {OVERWRITE_HINT}"
            )
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def _part_name(path: Path) -> Path:
    """``.NAME.part.SUFFIX``: beside ``path``, hidden, with its suffix (video writers pick the
    container from it)."""
    return path.with_name(f".{path.stem}.part{path.suffix}")


@contextmanager
def writing(
    path: str | os.PathLike,
    inputs: Iterable[str | os.PathLike] = (),
    overwrite: bool = False,
    what: str = "--out",
    keep_on_interrupt: bool = True,
) -> Iterator[Path]:
    """Write an output safely: :func:`check_output`, then the block writes the temporary path it
    is given (locked: a second run writing the same output at once is refused), which replaces
    ``path`` atomically at the end and is recorded as this project's. A failure leaves ``path``
    as it was; ``keep_on_interrupt``: Ctrl-C keeps what was written so far."""
    path = check_output(path, inputs, overwrite, what)
    part = _part_name(path)
    fd = os.open(part, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise FolderBusy(
                f"{what} {path} is being written by another run: wait for it to finish, or "
                "give another name"
            ) from None
        os.ftruncate(fd, 0)
        try:
            yield part
        except KeyboardInterrupt:
            if keep_on_interrupt and part.exists():
                os.replace(part, path)
                remember(path)
            raise
        except BaseException:
            part.unlink(missing_ok=True)
            raise
        if part.exists():
            os.replace(part, path)
            remember(path)
    finally:
        os.close(fd)


# ----------------------------------------------------------------------- owned folders

DATA_DIR_MARK = ".maskdet-data"
"""``DATA_DIR/.maskdet-data``: written by stage 01 when it takes a new or empty folder, so that
it later knows the folder is its own."""
_OURS = {LOCK_NAME, INCOMPLETE_NAME, OUTPUTS_RECORD, DATA_DIR_MARK}


def claim_folder(
    folder: str | os.PathLike, records: Iterable[str], what: str, option: str = "--out"
) -> None:
    """Refuse ``folder`` when it holds files and none of ``records`` (the files a stage leaves
    in a folder it made): a stage that replaces its folder's contents must never empty one it
    did not make. A new or empty folder is marked as the stage's (:data:`DATA_DIR_MARK`)."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise OutputRefused(f"{option} {folder} is a file, not a folder")
    present = sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []
    ours = [n for n in present if n in _OURS or n in records]
    if any(n in records or n == DATA_DIR_MARK for n in ours):
        return
    others = [n for n in present if n not in _OURS]
    if others:
        shown = ", ".join(printable(n) for n in others[:4]) + (", ..." if len(others) > 4 else "")
        raise OutputRefused(
            f"{option} {folder} already holds files that {what} did not make ({shown}): "
            f"{what} replaces what it finds there; give a new or empty folder"
        )
    folder.mkdir(parents=True, exist_ok=True)
    (folder / DATA_DIR_MARK).write_text(f"made by maskdet {what}\n", encoding="utf-8")
