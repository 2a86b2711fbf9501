"""Hard negatives: things that cover the lower face but are not masks.

A model trained on masked twins of clean faces can learn "something covers the mouth" instead of
"a mask". These renderers draw, from the same 68 landmarks, a full beard, a hand over the mouth or
chin, a scarf or a raised collar over the chin, or a microphone in front of the mouth, on a copy of the unmasked face. The result is labelled ``not_wearing_mask`` and stored
beside its source with the kind recorded in the manifest (``occluder``). As for masks, only the
region around the occluder changes: pixels where alpha is 0 keep their exact values.
"""

from __future__ import annotations

import cv2
import numpy as np

from . import appearance
from .landmarks import Face
from .masks import Rendered, composite, face_frame

KINDS = {"beard": 0.35, "hand": 0.3, "scarf": 0.12, "collar": 0.08, "microphone": 0.15}
"""Occluder kinds and their probabilities. Full beards come first: on real photos they are the
unmasked faces a model trained on masked twins most often calls masked."""
SUPERSAMPLE = 4
BEARD_COLORS = {
    "black": (30, 26, 24),
    "brown": (72, 52, 40),
    "grey": (150, 145, 140),
    "ginger": (140, 80, 45),
}


def _fill(shape: tuple[int, int], polys: list[np.ndarray], blur: float = 0.6) -> np.ndarray:
    """Anti-aliased alpha (float32, ``shape``) of the union of polygons in image coordinates."""
    h, w = shape
    big = np.zeros((h * SUPERSAMPLE, w * SUPERSAMPLE), np.uint8)
    for poly in polys:
        fixed = np.round(poly * SUPERSAMPLE * 16).astype(np.int32)
        cv2.fillPoly(big, [fixed], 255, lineType=cv2.LINE_8, shift=4)
    a = cv2.resize(big, (w, h), interpolation=cv2.INTER_AREA).astype(np.float32) / 255.0
    return cv2.GaussianBlur(a, (0, 0), blur) * (a > 0) if blur else a


def _ellipse(c: np.ndarray, ax: np.ndarray, ay: np.ndarray, n: int = 40) -> np.ndarray:
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)[:, None]
    return c + np.cos(t) * ax + np.sin(t) * ay


def _rot(v: np.ndarray, deg: float) -> np.ndarray:
    r = np.deg2rad(deg)
    return np.array([[np.cos(r), -np.sin(r)], [np.sin(r), np.cos(r)]]) @ v


def skin_color(rgb: np.ndarray, pts: np.ndarray) -> np.ndarray:
    """Median colour of the cheeks (between the jaw line and the nose, below the eyes)."""
    h, w = rgb.shape[:2]
    samples = []
    for a, b in ((2, 31), (14, 35), (3, 48), (13, 54)):
        p = (pts[a] * 0.6 + pts[b] * 0.4).round().astype(int)
        x, y = int(np.clip(p[0], 2, w - 3)), int(np.clip(p[1], 2, h - 3))
        samples.append(rgb[y - 2 : y + 3, x - 2 : x + 3].reshape(-1, 3))
    return np.median(np.concatenate(samples), 0).astype(np.float32)


def _hand(pts, o, ex, ey, fw, rng, shape):
    """Palm and four fingers over the mouth, chin or one cheek, tilted at random."""
    target = {
        "mouth": pts[62],
        "chin": pts[8] * 0.6 + pts[57] * 0.4,
        "cheek": pts[4] * 0.5 + pts[48] * 0.5,
    }
    where = str(rng.choice(list(target), p=[0.45, 0.35, 0.2]))
    c = target[where].astype(np.float64) + rng.normal(0, 0.04, 2) * fw
    size = fw * rng.uniform(0.36, 0.5)
    tilt = rng.uniform(-50, 50)
    up = _rot(-ey, tilt)  # the fingers' direction
    side = np.array([-up[1], up[0]])
    palm_c = c - up * size * 0.35
    polys = [_ellipse(palm_c, side * size * 0.5, up * size * 0.55)]
    fl = size * rng.uniform(0.7, 0.9)
    fwid = size * 0.2
    for k, off in enumerate((-0.36, -0.12, 0.12, 0.36)):
        base = palm_c + side * off * size * 1.0 + up * size * 0.25
        length = fl * (0.85 if k in (0, 3) else 1.0)
        tip = base + _rot(up, rng.uniform(-8, 8)) * length
        d = (tip - base) / max(np.linalg.norm(tip - base), 1e-6)
        n = np.array([-d[1], d[0]]) * fwid / 2
        cap = _ellipse(tip, n, d * fwid / 2, 16)
        polys += [np.vstack([base - n, tip - n, tip + n, base + n]), cap]
    alpha = _fill(shape, polys, blur=0.8)
    return alpha, where


def _band(pts, o, ex, ey, fw, rng, shape, top_frac: tuple[float, float]):
    """A band over the chin and below: top edge between the lower lip (0) and the chin (1)."""
    lip, chin = pts[57].astype(np.float64), pts[8].astype(np.float64)
    f = rng.uniform(*top_frac)
    top_c = lip + (chin - lip) * f
    half = fw * rng.uniform(0.75, 0.95)
    n = 24
    u = np.linspace(-1, 1, n)
    wave = (
        rng.uniform(0.02, 0.06) * fw * np.sin(u * np.pi * rng.uniform(1, 2.5) + rng.uniform(0, 6))
    )
    sag = 0.08 * fw * (u**2) * rng.uniform(-1, 1)
    top = top_c + np.outer(u * half, ex) + np.outer(wave + sag, ey)
    h, w = shape
    bottom = top[::-1] + ey * (h + w)
    return _fill(shape, [np.vstack([top, bottom])], blur=0.9)


def _strands(shape: tuple[int, int], ey: np.ndarray, length: float, rng) -> np.ndarray:
    """A field of hair strands (0..1): noise smeared along the face's vertical ``ey``."""
    h, w = shape
    noise = rng.random((h, w)).astype(np.float32)
    n = max(3, int(round(length)) | 1)
    kernel = np.zeros((n, n), np.float32)
    c = n // 2
    for t in np.linspace(-c, c, 4 * n):
        x, y = int(round(c + t * ey[0])), int(round(c + t * ey[1]))
        kernel[y, x] = 1.0
    field = cv2.filter2D(noise, -1, kernel / kernel.sum())
    field = (field - field.mean()) / (field.std() + 1e-6)
    return np.clip(0.5 + 0.35 * field, 0, 1)


def _beard(pts, o, ex, ey, fw, rng, shape):
    """A full beard: along the jaw up to the cheeks, round the mouth (lips left bare), and a
    moustache; hair strands and a ragged edge, thinner towards the cheeks."""
    jaw = pts[2:15].astype(np.float64)
    centre = pts[[2, 14, 8, 30]].mean(0)
    reach = rng.uniform(0.02, 0.09)
    outer = jaw + (jaw - centre) * reach + ey * 0.02 * fw
    cheek_l = pts[2] * 0.55 + pts[31] * 0.45 - ey * rng.uniform(0.0, 0.08) * fw
    cheek_r = pts[14] * 0.55 + pts[35] * 0.45 - ey * rng.uniform(0.0, 0.08) * fw
    lips = pts[48:60].astype(np.float64)
    lc = lips.mean(0)
    bare = lc + (lips - lc) * rng.uniform(1.05, 1.25)  # the lips stay visible
    beard = np.vstack(
        [outer, cheek_r[None], pts[35:30:-1].astype(np.float64) + ey * 0.04 * fw, cheek_l[None]]
    )
    alpha = _fill(shape, [beard], blur=1.5) - _fill(shape, [bare], blur=0.8)
    alpha = np.clip(alpha, 0, 1)
    strands = _strands(shape, ey, 0.035 * fw, rng)
    edge = np.clip(cv2.GaussianBlur(alpha, (0, 0), 0.04 * fw) * 1.8, 0, 1)  # soft, thin border
    ragged = np.clip(0.35 + strands, 0, 1)  # strands thin out the border unevenly
    alpha = alpha * np.where(edge > 0.9, 1.0, edge * ragged) * rng.uniform(0.8, 0.97)
    return alpha, strands


def _microphone(pts, o, ex, ey, fw, rng, shape):
    """A ball microphone in front of the mouth or chin, with its handle going down."""
    c = pts[62].astype(np.float64) * rng.uniform(0.3, 1.0) + pts[8].astype(np.float64) * 0
    c = c + ey * rng.uniform(0.0, 0.25) * fw + ex * rng.normal(0, 0.12) * fw
    r = fw * rng.uniform(0.11, 0.18)
    head = _ellipse(c, ex * r, ey * r * 1.1)
    d = _rot(ey, rng.uniform(-35, 35))
    n = np.array([-d[1], d[0]]) * r * 0.45
    h, w = shape
    far = c + d * (h + w)
    handle = np.vstack([c - n, far - n * 1.2, far + n * 1.2, c + n])
    return _fill(shape, [handle, head], blur=0.7), c, r


class OccluderRenderer:
    """Draws one hard negative (kind chosen from the caller's RNG) on a face."""

    name = "occluder"

    def render(self, rgb: np.ndarray, face: Face, rng: np.random.Generator) -> Rendered:
        kinds = list(KINDS)
        p = np.array(list(KINDS.values()))
        kind = str(rng.choice(kinds, p=p / p.sum()))
        pts = face.landmarks.astype(np.float64)
        o, ex, ey, fw = face_frame(pts)
        h, w = rgb.shape[:2]
        detail = kind
        if kind == "hand":
            alpha, where = _hand(pts, o, ex, ey, fw, rng, (h, w))
            detail = f"hand/{where}"
            base = skin_color(rgb, pts) * rng.uniform(0.92, 1.1)
            col = np.broadcast_to(base, (h, w, 3)).astype(np.float32)
            # knuckle and finger shading: soft dark lines along the fingers
            col = col * (0.93 + 0.07 * cv2.GaussianBlur(alpha, (0, 0), fw * 0.02))[..., None]
            color_name = "skin"
        elif kind == "beard":
            alpha, strands = _beard(pts, o, ex, ey, fw, rng, (h, w))
            color_name = str(rng.choice(list(BEARD_COLORS), p=[0.4, 0.35, 0.15, 0.1]))
            c0 = np.float32(BEARD_COLORS[color_name]) * rng.uniform(0.85, 1.15)
            col = c0 * (0.82 + 0.36 * strands)[..., None]
        elif kind in ("scarf", "collar"):
            top = (0.2, 0.75) if kind == "scarf" else (0.7, 1.15)
            alpha = _band(pts, o, ex, ey, fw, rng, (h, w), top)
            color_name = appearance.draw_color(rng)
            c0 = appearance.color_rgb(color_name, rng)
            yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
            if kind == "scarf":  # knit: fine ribs across, coarse folds
                u = ((xx - o[0]) * ex[0] + (yy - o[1]) * ex[1]) / fw
                rib = 0.9 + 0.1 * np.sin(2 * np.pi * u / rng.uniform(0.03, 0.06))
                col = c0 * rib[..., None]
            else:
                col = np.broadcast_to(c0, (h, w, 3)).astype(np.float32)
        else:
            alpha, c, r = _microphone(pts, o, ex, ey, fw, rng, (h, w))
            color_name = str(rng.choice(["black", "grey"], p=[0.7, 0.3]))
            c0 = appearance.color_rgb(color_name, rng)
            yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
            mesh = 0.85 + 0.15 * (np.sin(xx * 1.7) * np.sin(yy * 1.7) > 0)
            hl = np.exp(-((xx - c[0] + r * 0.3) ** 2 + (yy - c[1] + r * 0.3) ** 2) / (r * r * 0.3))
            col = c0 * mesh[..., None] + 90 * hl[..., None]
        # the same light as the face it covers
        light = appearance.illumination(rgb, alpha, fw, float(rng.uniform(0.5, 1.0)))
        col = np.clip(col * light[..., None], 0, 255).astype(np.float32)
        grain = 1.0 + 0.02 * rng.standard_normal((h, w)).astype(np.float32)
        col = col * grain[..., None]
        ys, xs = np.nonzero(alpha > 0)
        if not len(ys):
            raise ValueError("occluder outside the image")
        y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
        a = alpha[y0:y1, x0:x1]
        out = composite(rgb, col[y0:y1, x0:x1] * a[..., None], a, x0, y0)
        return Rendered(out, alpha, kind, color_name, detail, backend=self.name)
