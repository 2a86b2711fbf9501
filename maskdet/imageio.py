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
"""Memory a decode may take (the decoded pixels, the RGB copy and, for 16-bit or float images,
one 32-bit intermediate), checked from the header before decoding: an 8900x8900 RGB photo
(475 MB) is read, an 8900x8900 16-bit PNG (713 MB, 154 KB on disk) is refused at once."""
_BYTES_PER_PIXEL = {"1": 1, "L": 1, "P": 1, "LA": 2, "PA": 2, "La": 2, "RGB": 3, "YCbCr": 3}
_DEEP_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I", "F")
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


def decode_cost(mode: str, width: int, height: int) -> int:
    """Bytes a decode of an image of this mode and size takes (see :data:`MAX_DECODE_BYTES`)."""
    deep = mode in _DEEP_MODES
    per_pixel = 2 if mode.startswith("I;16") else _BYTES_PER_PIXEL.get(mode, 4)
    return width * height * (per_pixel + 3 + (4 if deep else 0))


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
    if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
        im = im.convert("RGBA")
        white = Image.new("RGBA", im.size, (255, 255, 255, 255))
        im = Image.alpha_composite(white, im)
    return np.asarray(im.convert("RGB"), dtype=np.uint8)


def decode_rgb(data: bytes, name: str = "<bytes>") -> np.ndarray:
    """Decode image bytes to an RGB uint8 array (EXIF orientation applied) or raise BadImage."""
    if not data:
        raise BadImage("empty file (0 bytes)")
    try:
        with Image.open(io.BytesIO(data)) as im:
            if im.width * im.height > MAX_PIXELS:
                raise BadImage(f"too large ({im.width}x{im.height})")
            cost = decode_cost(im.mode, im.width, im.height)
            if cost > MAX_DECODE_BYTES:
                raise BadImage(
                    f"too large to decode ({im.width}x{im.height} {im.mode}: {cost >> 20} MB, "
                    f"limit {MAX_DECODE_BYTES >> 20} MB): resize it first"
                )
            im.load()
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
    """Read any image file as RGB uint8 (H, W, 3); raise :class:`BadImage` with a reason."""
    try:
        data = Path(path).read_bytes()
    except OSError as err:
        raise BadImage(f"unreadable file: {err.strerror or err}") from None
    return decode_rgb(data, str(path))


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
