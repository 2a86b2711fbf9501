"""Stage 01's archives (.tgz, .tar, .zip), checked before anything is extracted.

Every member is checked from its header alone (:func:`_check_members`): a path that leaves the
folder, a link, a device or a FIFO is "an unsafe archive member"; a member larger than
:data:`MAX_MEMBER_BYTES`, or more than :data:`MAX_EXTRACT_BYTES` in all, is refused before it is
read (a 2 MB .tgz can hold a 2 GiB member). A damaged archive (a cut .zip too, known by its
first bytes) is told to be downloaded anew. Names extract as the bytes stored, whatever the
locale.
"""

from __future__ import annotations

import os
import shutil
import stat
import tarfile
import zipfile
import zlib
from collections.abc import Iterable, Iterator
from pathlib import Path, PurePosixPath

from .guard import check_regular, printable

MAX_MEMBER_BYTES = 512 << 20
"""Largest archive member extracted (a face photo is well under 1 MB; CelebA's largest file,
its identity list, 3 MB)."""
MAX_EXTRACT_BYTES = 32 << 30
"""Most bytes an archive may extract in all (LFW deep-funneled: 250 MB, CelebA aligned: 1.4 GB)."""
DAMAGED = "delete it and run again to download it anew, or give a whole copy"
UNSAFE = "an unsafe archive member"


class ArchiveError(ValueError):
    """An archive that cannot be extracted: damaged, unsafe or too large (nothing extracted)."""


def _archive_kind(path: Path) -> str:
    """``zip``, ``tar`` (plain or compressed) or ``""``, from the file's first bytes, so that a
    cut .zip (its index lost at the end) is still known as one."""
    with open(path, "rb") as fh:
        head = fh.read(512)
    if head[:4] in (b"PK\x03\x04", b"PK\x05\x06"):
        return "zip"
    if head[:2] == b"\x1f\x8b" or head[:3] == b"BZh" or head[:6] == b"\xfd7zXZ\x00":
        return "tar"
    if head[257:262] == b"ustar" or tarfile.is_tarfile(path):
        return "tar"
    return ""


def _check_members(path: Path, members: Iterable[tuple[str, int, str]]) -> None:
    """Refuse an archive from its members alone (name, size, kind), before anything is
    extracted: a path that leaves the folder, a link, device or FIFO, a member larger than
    :data:`MAX_MEMBER_BYTES`, or more than :data:`MAX_EXTRACT_BYTES` in all."""
    total = 0
    for name, size, kind in members:
        shown = printable(name)
        if name.startswith(("/", "\\")) or ".." in PurePosixPath(name.replace("\\", "/")).parts:
            raise ArchiveError(f"{path}: {UNSAFE} ({shown}: a path outside the archive's folder)")
        if kind not in ("file", "folder"):
            raise ArchiveError(
                f"{path}: {UNSAFE} ({shown}: a {kind}): only files and folders are extracted; "
                "give an archive of the images alone"
            )
        if size > MAX_MEMBER_BYTES:
            raise ArchiveError(
                f"{path}: member {shown} would extract to {size >> 20} MB (limit "
                f"{MAX_MEMBER_BYTES >> 20} MB per file): not an archive of face images"
            )
        total += size
        if total > MAX_EXTRACT_BYTES:
            raise ArchiveError(
                f"{path}: its members would extract to over {MAX_EXTRACT_BYTES >> 30} GB: "
                "not extracted"
            )


def _tar_kind(m: tarfile.TarInfo) -> str:
    if m.isreg():
        return "file"
    if m.isdir():
        return "folder"
    kinds = [
        (m.islnk(), f"hard link to {m.linkname}"),
        (m.issym(), f"symbolic link to {m.linkname}"),
        (m.ischr() or m.isblk(), "device"),
        (m.isfifo(), "FIFO"),
    ]
    return next((k for test, k in kinds if test), "special file")


def _zip_kind(info: zipfile.ZipInfo) -> str:
    mode = info.external_attr >> 16
    if info.is_dir():
        return "folder"
    if mode and not stat.S_ISREG(mode):
        return "symbolic link" if stat.S_ISLNK(mode) else "special file"
    return "file"


def _cp437(info: zipfile.ZipInfo) -> bytes | None:
    try:
        return info.filename.encode("cp437")
    except UnicodeEncodeError:
        return None


def _local_name(name: str, raw: bytes | None = None) -> str:
    """A member name as this system spells the same bytes (``raw``: the bytes stored, else the
    name's UTF-8), so that a name extracts unchanged whatever its bytes and the locale."""
    return os.fsdecode(raw if raw is not None else name.encode("utf-8", "surrogateescape"))


def extract(path: Path, dest: Path) -> Path:
    """Extract a .tgz/.tar/.zip once into ``dest``, after checking every member
    (:func:`_check_members`); a damaged archive and an unsafe one are told apart."""
    marker = dest / ".extracted"
    stamp = f"{printable(path)}:{path.stat().st_size}"
    if marker.exists() and marker.read_text(encoding="utf-8") == stamp:
        return dest
    check_regular(path)
    kind = _archive_kind(path)
    if not kind:
        raise ArchiveError(f"{path} is not a .tgz, .tar or .zip archive")
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    try:
        if kind == "zip":
            with zipfile.ZipFile(path) as zf:
                infos = zf.infolist()
                _check_members(path, [(i.filename, i.file_size, _zip_kind(i)) for i in infos])
                for info in infos:  # a name not flagged UTF-8 is the bytes stored (cp437)
                    utf8 = info.flag_bits & 0x800
                    info.filename = _local_name(info.filename, None if utf8 else _cp437(info))
                zf.extractall(dest, members=infos)
        else:
            with tarfile.open(path, encoding="utf-8", errors="surrogateescape") as tf:
                members: list[tarfile.TarInfo] = []

                def headers() -> Iterator[tuple[str, int, str]]:
                    for m in tf:  # one by one: a huge member is refused before it is read
                        members.append(m)
                        m.name = _local_name(m.name)
                        yield m.name, m.size, _tar_kind(m)

                _check_members(path, headers())
                tf.extractall(dest, members=members, filter="data")
    except ArchiveError:
        shutil.rmtree(dest, ignore_errors=True)
        raise
    except tarfile.FilterError as err:
        shutil.rmtree(dest, ignore_errors=True)
        raise ArchiveError(f"{path}: {UNSAFE} ({err})") from None
    except (EOFError, tarfile.TarError, zipfile.BadZipFile, zlib.error, OSError) as err:
        shutil.rmtree(dest, ignore_errors=True)
        what = "a .zip cut short or damaged" if kind == "zip" else "damaged or incomplete"
        raise ArchiveError(f"{path} is {what} ({type(err).__name__}: {err}): {DAMAGED}") from None
    marker.write_text(stamp, encoding="utf-8")
    return dest
