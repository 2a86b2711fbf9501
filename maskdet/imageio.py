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
    ".png",
    ".bmp",
    ".webp",
    ".tif",
    ".tiff",
    ".gif",
    ".ppm",
    ".pgm",
}
MIN_SIDE = 32
"""Images whose shorter side is below this many pixels cannot hold a usable face."""
MAX_PIXELS = 80_000_000
"""Larger images are refused instead of exhausting memory (6000x6000 = 36 MP is fine)."""
FACE_FORMAT = "PNG"
FACE_SUFFIX = ".png"


class BadImage(ValueError):
    """An input that cannot be used; ``str(err)`` is a short reason for the manifest."""


def is_image_name(path: str | os.PathLike) -> bool:
    """True for names with an image extension (any case, any number of dots in the stem)."""
    name = os.path.basename(str(path))
    return not name.startswith(".") and Path(name).suffix.lower() in IMAGE_EXTENSIONS


def _to_uint8_rgb(im: Image.Image) -> np.ndarray:
    if im.mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(im, dtype=np.float64)
        hi = 65535.0 if arr.max() > 255 else 255.0
        arr = np.clip(arr / hi * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return np.repeat(arr[..., None], 3, axis=2)
    if im.mode == "F":
        arr = np.asarray(im, dtype=np.float64)
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
            im.load()
            im = ImageOps.exif_transpose(im)
            arr = _to_uint8_rgb(im)
    except BadImage:
        raise
    except UnidentifiedImageError:
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
