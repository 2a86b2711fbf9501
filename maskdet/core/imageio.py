"""Safe image reading and the one writer used for both classes.

Every face the project stores goes through :func:`write_face`, so masked and unmasked images
share format (PNG, lossless), size and encoding: the mask is the only difference a model can learn.
:func:`read_rgb` turns anything a user may drop in a folder (CMYK, grayscale, RGBA, 16-bit,
EXIF-rotated, truncated or non-image files) into an RGB ``uint8`` array or a clear
:class:`BadImage` whose message is recorded in the manifest.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .guard import UnsafeFile, read_limited

IMAGE_EXTENSIONS = {
    ".jpg",
    ".jpeg",
    ".jfif",
    ".jpe",
    ".png",
    ".bmp",
    ".webp",
    ".tif",
    ".tiff",
    ".gif",
    ".ppm",
    ".pgm",
}
UNSUPPORTED_EXTENSIONS = {
    ".heic": "HEIC",
    ".heif": "HEIF",
    ".avif": "AVIF",
    ".jxl": "JPEG XL",
    ".dng": "raw camera",
    ".cr2": "raw camera",
    ".nef": "raw camera",
    ".arw": "raw camera",
    ".psd": "Photoshop",
}
"""Image formats this project cannot decode: such a file is an input with a reason, not a
"non-image"."""
MIN_SIDE = 32
"""Images whose shorter side is below this many pixels cannot hold a usable face."""
MAX_PIXELS = 80_000_000
"""Larger images are refused instead of exhausting memory (6000x6000 = 36 MP is fine)."""
MAX_DECODE_BYTES = 500_000_000
"""Memory a decode may take at its peak (the decoded pixels and every copy made on the way to
RGB: :func:`decode_cost`), checked from the header before decoding: a 48 MP RGB photo
(8000x6000: 480 MB) is read; an 8900x8900 16-bit PNG (1.1 GB, 154 KB on disk), an 8900x8900
palette PNG with transparency (870 MB, 78 KB) and RGBA PNG are refused at once."""
MAX_FILE_BYTES = 256 << 20
"""Largest image file read (a 80 MP JPEG is about 40 MB)."""
_DEEP_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I", "F")
_ALPHA_MODES = ("RGBA", "RGBa", "LA", "La", "PA")
ORIENTATION = 0x0112
"""The EXIF orientation tag."""
FACE_FORMAT = "PNG"
FACE_SUFFIX = ".png"


class BadImage(ValueError):
    """An input that cannot be used; ``str(err)`` is a short reason for the manifest."""


def is_image_name(path: str | os.PathLike, unsupported: bool = False) -> bool:
    """True for names with an image extension (any case, any number of dots in the stem);
    with ``unsupported``, also for images in a format that cannot be read here (HEIC, ...)."""
    name = os.path.basename(str(path))
    suffix = Path(name).suffix.lower()
    known = suffix in IMAGE_EXTENSIONS or (unsupported and suffix in UNSUPPORTED_EXTENSIONS)
    return not name.startswith(".") and known


def _has_alpha(im: Image.Image) -> bool:
    return im.mode in _ALPHA_MODES or (im.mode == "P" and "transparency" in im.info)


def decode_cost(mode: str, width: int, height: int, alpha: bool = False, turn: bool = False) -> int:
    """Bytes a decode of an image of this mode and size takes at its peak (see
    :data:`MAX_DECODE_BYTES`), as measured on Pillow 13 (which stores RGB and two-band images
    with 4 bytes a pixel): the decoded pixels (twice when an EXIF orientation turns them:
    ``turn``), then what :func:`_to_uint8_rgb` adds: 6 bytes a pixel to give an RGB image as an
    array, 10 for other modes and for transparency (``alpha``: an RGB copy composited on white
    first), 12 for 16-bit and float images (32-bit intermediates)."""
    stored = 1 if mode in ("1", "L", "P") else 2 if mode.startswith("I;16") else 4
    if mode in _DEEP_MODES:
        extra = 12
    elif alpha or mode != "RGB":
        extra = 10
    else:
        extra = 6
    return width * height * (stored * (2 if turn else 1) + extra)


def _to_uint8_rgb(im: Image.Image) -> np.ndarray:
    if im.mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(im, dtype=np.float32)
        hi = 65535.0 if arr.max() > 255 else 255.0
        arr = np.clip(arr * np.float32(255.0 / hi) + 0.5, 0, 255).astype(np.uint8)
        return np.repeat(arr[..., None], 3, axis=2)
    if im.mode == "F":
        arr = np.asarray(im, dtype=np.float32)
        lo, hi = float(arr.min()), float(arr.max())
        arr = (arr - lo) / (hi - lo or 1.0) * 255.0
        return np.repeat(arr.astype(np.uint8)[..., None], 3, axis=2)
    if _has_alpha(im):  # onto white, with no more copies than decode_cost counts
        rgba = im if im.mode == "RGBA" else im.convert("RGBA")
        rgb = Image.new("RGB", im.size, (255, 255, 255))
        rgb.paste(rgba, mask=rgba.getchannel("A"))
        del rgba
        return np.asarray(rgb, dtype=np.uint8)
    return np.asarray(im if im.mode == "RGB" else im.convert("RGB"), dtype=np.uint8)


def decode_rgb(data: bytes, name: str = "<bytes>") -> np.ndarray:
    """Decode image bytes to an RGB uint8 array (EXIF orientation applied) or raise BadImage."""
    if not data:
        raise BadImage("empty file (0 bytes)")
    try:
        with Image.open(io.BytesIO(data)) as im:
            if im.width * im.height > MAX_PIXELS:
                raise BadImage(f"too large ({im.width}x{im.height})")
            turn = im.getexif().get(ORIENTATION, 1) not in (0, 1)
            cost = decode_cost(im.mode, im.width, im.height, _has_alpha(im), turn)
            if cost > MAX_DECODE_BYTES:
                raise BadImage(
                    f"too large to decode ({im.width}x{im.height} {im.mode}: {cost >> 20} MB, "
                    f"limit {MAX_DECODE_BYTES >> 20} MB): resize it first"
                )
            im.load()
            if turn:
                im = ImageOps.exif_transpose(im)
            arr = _to_uint8_rgb(im)
    except BadImage:
        raise
    except UnidentifiedImageError:
        kind = UNSUPPORTED_EXTENSIONS.get(Path(name).suffix.lower())
        if kind:
            raise BadImage(f"{kind} image: not readable here, convert it to JPEG or PNG") from None
        raise BadImage("not an image") from None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        raise BadImage(f"corrupt image: {err}".splitlines()[0][:120]) from None
    if min(arr.shape[:2]) < MIN_SIDE:
        raise BadImage(f"too small ({arr.shape[1]}x{arr.shape[0]}, need {MIN_SIDE} px)")
    return arr


def read_rgb(path: str | os.PathLike) -> np.ndarray:
    """Read any image file as RGB uint8 (H, W, 3); raise :class:`BadImage` with a reason. The
    file is checked with ``stat`` first: a FIFO, a device (a link to ``/dev/zero``) or a file
    over :data:`MAX_FILE_BYTES` is refused unread."""
    try:
        data = read_limited(path, MAX_FILE_BYTES, "image file")
    except UnsafeFile as err:
        raise BadImage(str(err)) from None
    except OSError as err:
        raise BadImage(f"unreadable file: {err.strerror or err}") from None
    return decode_rgb(data, os.fsdecode(path))


def write_face(path: str | os.PathLike, rgb: np.ndarray) -> None:
    """Write a face crop: the single writer for both classes (lossless PNG, fixed settings).

    The bytes depend only on the pixels, so re-runs and any worker count give identical files.
    The file is written atomically (temporary name, then rename).
    """
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"write_face wants HxWx3 uint8, got {rgb.dtype} {rgb.shape}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    Image.fromarray(rgb, "RGB").save(buf, format=FACE_FORMAT, compress_level=1, optimize=False)
    tmp = path.with_name(path.name + ".part")
    tmp.write_bytes(buf.getvalue())
    os.replace(tmp, path)
