"""Downloads through one table of URLs and checksums (d2l style), with resume and mirrors.

Every remote file the project needs is a row of :data:`DOWNLOADS`. :func:`download` tries the
row's URLs in turn, resumes an interrupted ``.part`` file with an HTTP ``Range`` request (or
restarts cleanly when the server ignores it), retries, shows a progress bar and checks the md5
before the file gets its final name: a file that fails the check is deleted, never used.
Offline, every stage also takes a local archive or folder instead (``--source PATH``).
"""

from __future__ import annotations

import hashlib
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import requests
from tqdm.auto import tqdm

CHUNK = 1 << 20


@dataclass(frozen=True)
class Remote:
    """One downloadable file: name, md5 and where to get it (URLs or Google Drive ids)."""

    filename: str
    md5: str
    urls: tuple[str, ...] = ()
    gdrive_id: str = ""
    note: str = ""
    extra_urls_env: str = field(default="", compare=False)


DOWNLOADS: dict[str, Remote] = {
    # LFW deep-funneled (Huang et al.): the official archive, https first, then http.
    # An instructor's mirror can be added with MASKDET_LFW_MIRRORS="url1 url2".
    "lfw": Remote(
        "lfw-deepfunneled.tgz",
        "68331da3eb755a505a502b5aacb3c201",
        (
            "https://vis-www.cs.umass.edu/lfw/lfw-deepfunneled.tgz",
            "http://vis-www.cs.umass.edu/lfw/lfw-deepfunneled.tgz",
        ),
        extra_urls_env="MASKDET_LFW_MIRRORS",
        note="13,233 images of 5,749 people, 250x250, deep-funneled alignment",
    ),
    # Aligned CelebA through Google Drive, with torchvision's file ids and md5s.
    "celeba_images": Remote(
        "img_align_celeba.zip",
        "00d2c5bc6d35e252742224ab0c1e8fcb",
        gdrive_id="0B7EVK8r0v71pZjFTYXZWM3FlRnM",
    ),
    "celeba_identities": Remote(
        "identity_CelebA.txt",
        "32bd1bd63d3c78cd57e08160ec5ed1e2",
        gdrive_id="1_ee_0u7vcNLOfNLegJRHmolfH5ICW-XS",
    ),
}


class DownloadError(RuntimeError):
    """No URL gave the file; the message names the offline option."""


class ChecksumError(DownloadError):
    """The bytes received do not match the table's md5 (the file was deleted)."""


OFFLINE_HINT = (
    "No network? Point stage 01 at a local copy instead: "
    "`python -m maskdet download --source /path/to/lfw-deepfunneled.tgz --out data` "
    "(or SOURCE = '/path/to/lfw-deepfunneled.tgz' in notebook 01)."
)


def md5sum(path: str | os.PathLike) -> str:
    h = hashlib.md5()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def _fetch_once(url: str, part: Path, timeout: float, progress: bool) -> None:
    """Append the rest of ``url`` to ``part`` (resuming when the server allows it)."""
    have = part.stat().st_size if part.exists() else 0
    headers = {"Range": f"bytes={have}-"} if have else {}
    with requests.get(url, stream=True, timeout=timeout, headers=headers) as r:
        if r.status_code == 416:  # already complete
            return
        r.raise_for_status()
        if have and r.status_code != 206:  # server ignored Range: restart cleanly
            have = 0
        total = int(r.headers.get("Content-Length", 0)) + have or None
        mode = "ab" if have else "wb"
        with (
            open(part, mode) as fh,
            tqdm(
                total=total,
                initial=have,
                unit="B",
                unit_scale=True,
                desc=part.name[:-5],
                disable=not progress,
                leave=False,
            ) as bar,
        ):
            for chunk in r.iter_content(CHUNK):
                fh.write(chunk)
                bar.update(len(chunk))
        if total is not None and part.stat().st_size < total:
            raise requests.ConnectionError(
                f"connection closed at {part.stat().st_size} of {total} bytes"
            )


def download_url(
    urls: list[str] | tuple[str, ...],
    dest: str | os.PathLike,
    md5: str | None,
    retries: int = 3,
    timeout: float = 30.0,
    progress: bool = True,
    backoff: float = 1.0,
) -> Path:
    """Download to ``dest`` from the first URL that works; verify ``md5`` before renaming.

    An existing ``dest`` with the right md5 is reused. A partial ``dest.part`` is resumed.
    Raises :class:`ChecksumError` on a mismatch (the bad file is deleted) and
    :class:`DownloadError`, naming the offline option, when no URL answers.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    if dest.exists():
        if md5 is None or md5sum(dest) == md5:
            return dest
        dest.unlink()  # a stale or damaged copy is never used
    part = dest.with_name(dest.name + ".part")
    errors: list[str] = []
    for url in urls:
        for attempt in range(1, retries + 1):
            try:
                _fetch_once(url, part, timeout, progress)
                break
            except (requests.RequestException, OSError) as err:
                errors.append(f"{url} (try {attempt}): {err}")
                if attempt < retries:
                    time.sleep(backoff * attempt)
        else:
            continue
        got = md5sum(part)
        if md5 is not None and got != md5:
            part.unlink(missing_ok=True)
            raise ChecksumError(
                f"checksum mismatch for {dest.name} from {url}: md5 {got}, expected {md5}; "
                "the file was deleted. " + OFFLINE_HINT
            )
        os.replace(part, dest)
        return dest
    raise DownloadError(
        f"could not download {dest.name}:\n  "
        + "\n  ".join(errors[-len(urls) * 1 or None :])
        + "\n"
        + OFFLINE_HINT
    )


def download_remote(key: str, cache_dir: str | os.PathLike, progress: bool = True) -> Path:
    """Fetch one row of :data:`DOWNLOADS` into ``cache_dir`` (Google Drive rows use gdown)."""
    remote = DOWNLOADS[key]
    dest = Path(cache_dir) / remote.filename
    if remote.gdrive_id:
        return download_gdrive_file(remote.gdrive_id, dest, remote.md5, progress)
    urls = list(remote.urls)
    if remote.extra_urls_env and os.environ.get(remote.extra_urls_env):
        urls += os.environ[remote.extra_urls_env].split()
    return download_url(urls, dest, remote.md5, progress=progress)


def download_gdrive_file(
    id_or_url: str, dest: str | os.PathLike, md5: str | None, progress: bool = True
) -> Path:
    """One Google Drive file through gdown (resumable), checked against ``md5`` when given."""
    import gdown  # Google Drive sources only

    dest = Path(dest)
    if dest.exists() and (md5 is None or md5sum(dest) == md5):
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    is_url = id_or_url.startswith("http")
    try:
        out = gdown.download(
            url=id_or_url if is_url else None,
            id=None if is_url else id_or_url,
            output=str(dest),
            quiet=not progress,
            resume=True,
            fuzzy=True,
        )
    except Exception as err:  # gdown raises its own exception types
        raise DownloadError(
            f"Google Drive download of {id_or_url} failed: {err}\n{OFFLINE_HINT}"
        ) from None
    if not out or not dest.exists():
        raise DownloadError(f"Google Drive download of {id_or_url} gave no file.\n{OFFLINE_HINT}")
    if md5 is not None and md5sum(dest) != md5:
        dest.unlink()
        raise ChecksumError(
            f"checksum mismatch for {dest.name} from Google Drive; the file was deleted."
        )
    return dest


def download_gdrive(id_or_url: str, cache_dir: str | os.PathLike, progress: bool = True) -> Path:
    """An instructor's own Drive file or folder (``gdrive:ID_OR_URL`` sources)."""
    import gdown  # Google Drive sources only

    cache_dir = Path(cache_dir)
    if "/folders/" in id_or_url:
        out = cache_dir / "gdrive_folder"
        try:
            gdown.download_folder(url=id_or_url, output=str(out), quiet=not progress, resume=True)
        except Exception as err:
            raise DownloadError(
                f"Google Drive folder download failed: {err}\n{OFFLINE_HINT}"
            ) from None
        return out
    key = hashlib.md5(id_or_url.encode()).hexdigest()[:10]
    dest = cache_dir / f"gdrive_{key}"
    got = download_gdrive_file(id_or_url, dest, None, progress)
    return got
