"""The project's own mask renderer (backend ``builtin``) and the compositing both backends share.

Shapes are drawn from the 68 dlib landmarks in a face frame (eye line = x axis): surgical (with
pleats), N95 (cup), KN95 (folded, pointed, centre seam) and cloth (rounded, seam), in many colours
and textures (solid, stripes, checks, dots, noise; with the look's opt-in ``prints`` lever also
plaid, florals, camouflage and logos, and with ``skin`` masks near the face's own skin tone).
Edges are anti-aliased (4x supersampled polygon) and the colour is shaded (cylinder across the
face, pleat folds, edge darkening, scene brightness) so the mask does not look flat. Only the
region around the mask is touched: pixels where alpha is 0 keep their exact values.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import cv2
import numpy as np

from . import appearance
from .appearance import Look
from .landmarks import Face, below_eye_line, eye_centres

SUPERSAMPLE = 4
MASK_TYPES = {"surgical": 0.35, "N95": 0.15, "KN95": 0.2, "cloth": 0.3}
COLORS = {
    "white": "#f0f0ec",
    "light_blue": "#8fc1e3",
    "blue": "#2f6db5",
    "navy": "#1f2f4f",
    "teal": "#3aa39a",
    "green": "#5d8c4a",
    "black": "#1e1e1e",
    "grey": "#8a8d91",
    "pink": "#e8a0b4",
    "red": "#b3282d",
    "purple": "#6b4c8a",
    "yellow": "#e6c04a",
    "orange": "#d9792b",
    "beige": "#d8c3a5",
    "brown": "#6e4b3a",
}
TYPE_COLORS = {
    "surgical": ["white", "light_blue", "blue", "teal", "green", "pink", "black", "grey"],
    "N95": ["white", "white", "grey", "beige", "light_blue", "black"],
    "KN95": ["white", "white", "black", "grey", "pink", "light_blue", "navy"],
    "cloth": list(COLORS),
}
CLOTH_TEXTURES = {"solid": 0.3, "stripes": 0.2, "checks": 0.2, "dots": 0.15, "noise": 0.15}
REAL_MASK_TYPES = {"surgical": 0.45, "KN95": 0.15, "N95": 0.08, "cloth": 0.32}
"""With the ``real`` palette: surgical masks are the most common in real photos, then cloth."""
REAL_TYPE_COLORS = {
    "surgical": ["light_blue", "white", "black", "pink", "teal", "blue", "grey", "green", "cream"],
    "N95": ["white", "cream", "grey", "black"],
    "KN95": ["white", "black", "grey", "pink", "light_blue", "navy", "cream", "beige"],
    "cloth": list(appearance.PALETTE),
}
REAL_CLOTH_TEXTURES = {"solid": 0.45, "stripes": 0.1, "checks": 0.15, "dots": 0.1, "noise": 0.2}
PRINT_TEXTURES = {
    "solid": 0.2,
    "stripes": 0.1,
    "checks": 0.05,
    "dots": 0.1,
    "noise": 0.05,
    "plaid": 0.15,
    "floral": 0.15,
    "camo": 0.1,
    "logo": 0.1,
}
"""With the ``prints`` lever: the textures of cloth masks (and of :data:`PRINTED_SURGICAL` of
the surgical ones): patterned and printed cloth, which real-mask sets show often and a model
trained on plain masks misses."""
PRINTED_SURGICAL = 0.25
"""With the ``prints`` lever: the share of surgical masks that are printed."""


@dataclass
class Rendered:
    """A masked image, the mask's alpha (float32, 0..1, image size) and what was drawn."""

    rgb: np.ndarray
    alpha: np.ndarray
    mask_type: str
    mask_color: str
    mask_texture: str
    backend: str = ""  # which renderer drew it (set by the mixed renderer)


def rgb_of(hex_color: str) -> np.ndarray:
    h = hex_color.lstrip("#")
    return np.array([int(h[i : i + 2], 16) for i in (0, 2, 4)], dtype=np.float32)


def composite(
    rgb: np.ndarray, premult: np.ndarray, alpha: np.ndarray, x0: int, y0: int
) -> np.ndarray:
    """Proper alpha compositing of a premultiplied colour patch at (x0, y0): out = img*(1-a) + c*a.

    ``premult`` (h, w, 3) float32 = colour * alpha; ``alpha`` (h, w) float32. Pixels with alpha 0
    are returned unchanged (no halo: edge pixels blend, they never add up and saturate).
    """
    h, w = alpha.shape
    out = rgb.copy()
    roi = rgb[y0 : y0 + h, x0 : x0 + w].astype(np.float32)
    blended = roi * (1.0 - alpha[..., None]) + premult
    out[y0 : y0 + h, x0 : x0 + w] = np.clip(blended + 0.5, 0, 255).astype(np.uint8)
    return out


def face_frame(pts: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """Origin (between the eyes), unit x (along the eye line), unit y (down the face), face width."""
    pts = pts.astype(np.float64)
    le, re = eye_centres(pts)
    ex = (re - le) / max(np.linalg.norm(re - le), 1e-6)
    ey = np.array([-ex[1], ex[0]])
    width = float(np.linalg.norm(pts[16] - pts[0])) or 1.0
    return (le + re) / 2, ex, ey, width


def _bezier(p0: np.ndarray, c: np.ndarray, p1: np.ndarray, n: int = 12) -> np.ndarray:
    t = np.linspace(0, 1, n)[:, None]
    return (1 - t) ** 2 * p0 + 2 * (1 - t) * t * c + t**2 * p1


def _smooth(line: np.ndarray, rounds: int = 2) -> np.ndarray:
    """Chaikin corner cutting of an open polyline (end points kept)."""
    for _ in range(rounds):
        q = 0.75 * line[:-1] + 0.25 * line[1:]
        r = 0.25 * line[:-1] + 0.75 * line[1:]
        line = np.vstack([line[:1], np.stack([q, r], 1).reshape(-1, 2), line[-1:]])
    return line


def outline(mask_type: str, pts: np.ndarray) -> np.ndarray:
    """The mask's polygon (N, 2) in image coordinates for one of :data:`MASK_TYPES`.

    No point lies higher (along the face's vertical) than 60% of the way from the eye line to
    the top of the mask on the nose, so the mask never reaches the eyes on tilted heads."""
    poly = _outline(mask_type, pts)
    o, _, ey, fw = face_frame(pts)
    top = pts[27] + 0.55 * (pts[30] - pts[27])
    vmin = max(0.6 * float((top - o) @ ey), 0.08 * fw)
    v = (poly - o) @ ey
    return poly + np.clip(vmin - v, 0, None)[:, None] * ey


def _outline(mask_type: str, pts: np.ndarray) -> np.ndarray:
    pts = pts.astype(np.float64)
    o, ex, ey, fw = face_frame(pts)
    top = pts[27] + 0.55 * (pts[30] - pts[27])  # half-way down the nose bridge
    chin = pts[8] + 0.05 * fw * ey
    jaw = pts[:17]
    centre = pts[[2, 14, 8, 30]].mean(0)

    def out(p: np.ndarray, k: float) -> np.ndarray:  # push a jaw point outwards from the centre
        return p + k * (p - centre)

    if mask_type == "surgical":
        lt, rt = out(jaw[1], 0.04), out(jaw[15], 0.04)
        upper_l = _bezier(lt, (lt + top) / 2 - 0.05 * fw * ey, top)
        upper_r = _bezier(top, (rt + top) / 2 - 0.05 * fw * ey, rt)
        lower = [out(jaw[i], 0.07) for i in range(15, 1, -1)]
        lower[7] = chin + 0.04 * fw * ey  # jaw[8]
        return np.vstack([upper_l, upper_r[1:], _smooth(np.array(lower))])
    if mask_type == "N95":
        lt, rt = out(jaw[2], -0.02), out(jaw[14], -0.02)
        upper_l = _bezier(lt, np.array([lt[0] + 0.25 * (top[0] - lt[0]), top[1]]), top)
        upper_r = _bezier(top, np.array([rt[0] + 0.25 * (top[0] - rt[0]), top[1]]), rt)
        lower_r = _bezier(rt, out(jaw[12], 0.1), chin + 0.03 * fw * ey)
        lower_l = _bezier(chin + 0.03 * fw * ey, out(jaw[4], 0.1), lt)
        return np.vstack([upper_l, upper_r, lower_r, lower_l])
    if mask_type == "KN95":
        lt, rt = out(jaw[2], 0.0), out(jaw[14], 0.0)
        tip = chin + 0.06 * fw * ey
        return np.vstack([lt, top, rt, out(jaw[12], 0.06), tip, out(jaw[4], 0.06)])
    if mask_type == "cloth":
        lt, rt = out(jaw[1], 0.03), out(jaw[15], 0.03)
        upper_l = _bezier(lt, (lt + top) / 2 - 0.08 * fw * ey, top)
        upper_r = _bezier(top, (rt + top) / 2 - 0.08 * fw * ey, rt)
        lower = [out(jaw[i], 0.09) for i in range(15, 1, -1)]
        lower[7] = chin + 0.09 * fw * ey
        return np.vstack([upper_l, upper_r[1:], _smooth(np.array(lower), 3)])
    raise ValueError(f"unknown builtin mask type {mask_type!r}")


def _pattern(
    kind: str,
    u: np.ndarray,
    v: np.ndarray,
    c0: np.ndarray,
    c1: np.ndarray,
    rng: np.random.Generator,
) -> np.ndarray:
    """Colour field (h, w, 3) for a texture; u, v are face-frame coordinates in face widths."""
    if kind == "solid":
        return np.broadcast_to(c0, u.shape + (3,)).astype(np.float32)
    period = float(rng.uniform(0.07, 0.16))
    if kind == "stripes":
        ang = float(rng.choice([0.0, np.pi / 2, np.pi / 4, -np.pi / 4]))
        s = np.cos(ang) * u + np.sin(ang) * v
        t = (np.sin(2 * np.pi * s / period) > 0).astype(np.float32)
    elif kind == "checks":
        a = (np.sin(2 * np.pi * u / period) > 0).astype(np.float32)
        b = (np.sin(2 * np.pi * v / period) > 0).astype(np.float32)
        t = 0.5 * (a + b)  # gingham: overlapping bands
    elif kind == "dots":
        gu, gv = (u / period) % 1.0 - 0.5, (v / period) % 1.0 - 0.5
        t = np.clip((0.27 - np.hypot(gu, gv)) * 12 + 0.5, 0, 1).astype(np.float32)
    elif kind == "noise":
        grid = rng.random((6, 6)).astype(np.float32)
        field = cv2.resize(grid, (u.shape[1], u.shape[0]), interpolation=cv2.INTER_CUBIC)
        t = np.clip((field - 0.3) * 1.6, 0, 1)
    elif kind in PRINTS:
        return PRINTS[kind](Cloth(u, v, c0, c1, period), rng)
    else:
        raise ValueError(f"unknown texture {kind!r}")
    return c0 * (1 - t[..., None]) + c1 * t[..., None]


class Cloth(NamedTuple):
    """What a printed texture is drawn from: face-frame coordinates ``u``, ``v`` (face widths),
    the two colours and the pattern's base period (face widths)."""

    u: np.ndarray
    v: np.ndarray
    c0: np.ndarray
    c1: np.ndarray
    period: float


def _mix(c0: np.ndarray, *layers: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """``c0`` with each ``(weight field, colour)`` laid over it in turn (fields h x w, 0..1)."""
    out = np.broadcast_to(c0, layers[0][0].shape + (3,)).astype(np.float32)
    for field, colour in layers:
        out = out * (1 - field[..., None]) + colour * field[..., None]
    return out


def _band(x: np.ndarray, period: float, width: float) -> np.ndarray:
    """Anti-aliased bands across ``x``, ``width`` of each ``period`` wide (float32, 0..1)."""
    dist = np.abs((x / period + 0.5) % 1.0 - 0.5)  # 0 at a band's centre, 0.5 between two
    return np.clip((width / 2 - dist) * 40 + 0.5, 0, 1).astype(np.float32)


def _plaid(cloth: Cloth, rng: np.random.Generator) -> np.ndarray:
    """Tartan: wide bands of ``c1`` both ways (half strength alone, full where two cross) and
    thin lines of a dark or light third colour between them."""
    u, v, c0, c1, period = cloth
    p = period * float(rng.uniform(1.2, 2.0))
    wide = 0.5 * (_band(u, p, 0.4) + _band(v, p, 0.4))
    third = np.clip(c0 * float(rng.choice([0.35, 1.6])), 0, 255)
    thin = np.maximum(_band(u + p / 2, p, 0.08), _band(v + p / 2, p, 0.08))
    return _mix(c0, (wide, c1), (thin * 0.8, third))


def _flowers(cloth: Cloth, rng: np.random.Generator) -> np.ndarray:
    """Florals: a flower with 4-6 petals in ``c1`` on a jittered grid of cells (each turned at
    random), with a light centre."""
    u, v, c0, c1, period = cloth
    p = period * float(rng.uniform(1.3, 2.2))
    n = 16
    jitter, turn = rng.uniform(0.25, 0.75, (n, n, 2)), rng.uniform(0, 2 * np.pi, (n, n))
    petals = int(rng.integers(4, 7))
    iu, iv = np.floor(u / p).astype(int) % n, np.floor(v / p).astype(int) % n
    du = (u / p) % 1.0 - jitter[iu, iv, 0]
    dv = (v / p) % 1.0 - jitter[iu, iv, 1]
    r, ang = np.hypot(du, dv), np.arctan2(dv, du) + turn[iu, iv]
    radius = 0.3 * (0.45 + 0.55 * np.abs(np.cos(petals / 2 * ang)))
    flower = np.clip((radius - r) * 30 + 0.5, 0, 1).astype(np.float32)
    centre = np.clip((0.07 - r) * 30 + 0.5, 0, 1).astype(np.float32)
    light = np.array([245.0, 225.0, 120.0], np.float32)
    return _mix(c0, (flower, c1), (centre, light))


def _camo(cloth: Cloth, rng: np.random.Generator) -> np.ndarray:
    """Camouflage: blobs of three tones from two scales of smooth noise (``c0``, ``c1`` and a
    darker mix of the two)."""
    u, _, c0, c1, _ = cloth
    h, w = u.shape
    fields = []
    for cells in (4, 9):
        grid = rng.random((cells, cells)).astype(np.float32)
        fields.append(cv2.resize(grid, (w, h), interpolation=cv2.INTER_CUBIC))
    f = 0.65 * fields[0] + 0.35 * fields[1]
    lo, hi = np.percentile(f, [35, 70]) if f.size else (0.4, 0.6)
    dark = 0.55 * (c0 + c1) / 2
    mid = np.clip((f - lo) * 25 + 0.5, 0, 1).astype(np.float32)
    top = np.clip((f - hi) * 25 + 0.5, 0, 1).astype(np.float32)
    return _mix(c0, (mid, c1), (top, dark))


def _logo(cloth: Cloth, rng: np.random.Generator) -> np.ndarray:
    """A plain mask with a small printed logo in ``c1`` on one cheek: a ring, a star or a
    dot-and-line wordmark, a seventh to a quarter of the face wide."""
    u, v, c0, c1, _ = cloth
    cu = float(rng.choice([-0.22, 0.22])) + float(rng.uniform(-0.04, 0.04))
    du, dv = u - cu, v - float(rng.uniform(0.6, 0.8))
    r, ang = np.hypot(du, dv), np.arctan2(dv, du)
    size = float(rng.uniform(0.07, 0.12))
    shape = str(rng.choice(["ring", "star", "wordmark"]))
    if shape == "ring":
        d = np.abs(r - size) - 0.25 * size
    elif shape == "star":
        d = r - size * (0.6 + 0.4 * np.cos(5 * ang))
    else:  # a line of "text" and a dot before it
        line = np.maximum(np.abs(du - 0.6 * size) - 1.4 * size, np.abs(dv) - 0.3 * size)
        d = np.minimum(line, np.hypot(du + 1.4 * size, dv) - 0.35 * size)
    mark = np.clip(-d * 300 + 0.5, 0, 1).astype(np.float32)
    return _mix(c0, (mark, c1))


PRINTS = {"plaid": _plaid, "floral": _flowers, "camo": _camo, "logo": _logo}
"""The ``prints`` lever's textures beyond the plain ones (:func:`_pattern`)."""


class BuiltinRenderer:
    """Draws a mask on a face from its landmarks; choices come from the caller's RNG."""

    name = "builtin"

    def __init__(self, look: Look | str | None = None) -> None:
        self.look = Look.parse(look)

    def choose(self, rng: np.random.Generator) -> tuple[str, str, str]:
        """(mask_type, colour name, texture[/second colour]) for one image."""
        if self.look.palette == "real":
            return self._choose_real(rng)
        types = list(MASK_TYPES)
        mask_type = str(
            rng.choice(types, p=np.array(list(MASK_TYPES.values())) / sum(MASK_TYPES.values()))
        )
        color = str(rng.choice(TYPE_COLORS[mask_type]))
        texture = "solid"
        if mask_type == "cloth":
            texture = str(rng.choice(list(CLOTH_TEXTURES), p=list(CLOTH_TEXTURES.values())))
        elif mask_type == "N95" and rng.random() < 0.25:
            texture = "noise"
        if texture != "solid":  # the pattern's second colour goes with the texture
            texture += "/" + str(rng.choice([c for c in COLORS if c != color]))
        return mask_type, color, texture

    def _choose_real(self, rng: np.random.Generator) -> tuple[str, str, str]:
        types = list(REAL_MASK_TYPES)
        p = np.array(list(REAL_MASK_TYPES.values()))
        mask_type = str(rng.choice(types, p=p / p.sum()))
        if self.look.skin and rng.random() < appearance.SKIN_P:
            color = "skin"  # near the face's own skin (appearance.low_contrast_rgb)
        else:
            color = appearance.draw_color(rng, REAL_TYPE_COLORS[mask_type])
        texture = "solid"
        textures = PRINT_TEXTURES if self.look.prints else REAL_CLOTH_TEXTURES
        if mask_type == "cloth":
            texture = str(rng.choice(list(textures), p=list(textures.values())))
        elif self.look.prints and mask_type == "surgical" and rng.random() < PRINTED_SURGICAL:
            printed = {k: w for k, w in PRINT_TEXTURES.items() if k != "solid"}
            p = np.array(list(printed.values()))
            texture = str(rng.choice(list(printed), p=p / p.sum()))
        if texture != "solid":
            texture += "/" + appearance.draw_color(
                rng, [c for c in appearance.PALETTE if c != color]
            )
        return mask_type, color, texture

    def _rgb(
        self, name: str, rng: np.random.Generator, skin: np.ndarray | None = None
    ) -> np.ndarray:
        """A colour's RGB; ``skin`` (the face's own tone) for the ``skin`` lever's masks."""
        if name == "skin" and skin is not None:
            return appearance.low_contrast_rgb(skin, rng)
        if self.look.palette == "real":
            return appearance.color_rgb(name, rng)
        return rgb_of(COLORS[name])

    def render(self, rgb: np.ndarray, face: Face, rng: np.random.Generator) -> Rendered:
        mask_type, color, texture = self.choose(rng)
        poly = outline(mask_type, face.landmarks)
        if self.look.jitter:
            o, ex, ey, fw = face_frame(face.landmarks)
            poly = appearance.jitter_points(poly, o, ex, ey, fw, rng)
        h, w = rgb.shape[:2]
        x0, y0 = np.floor(poly.min(0)).astype(int) - 2
        x1, y1 = np.ceil(poly.max(0)).astype(int) + 3
        x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, w), min(y1, h)
        if x1 - x0 < 4 or y1 - y0 < 4:
            raise ValueError("mask outline outside the image")
        rw, rh = x1 - x0, y1 - y0
        # anti-aliased alpha: fill at 4x with sub-pixel precision, then area-average down
        big = np.zeros((rh * SUPERSAMPLE, rw * SUPERSAMPLE), np.uint8)
        fixed = np.round((poly - [x0, y0]) * SUPERSAMPLE * 16).astype(np.int32)
        cv2.fillPoly(big, [fixed], 255, lineType=cv2.LINE_8, shift=4)
        alpha = cv2.resize(big, (rw, rh), interpolation=cv2.INTER_AREA).astype(np.float32) / 255.0
        alpha = cv2.GaussianBlur(alpha, (3, 3), 0.5) * (
            alpha > 0
        )  # softer edge, still zero outside

        o, ex, ey, fw = face_frame(face.landmarks)
        yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float32)
        dx, dy = xx - o[0], yy - o[1]
        u = (dx * ex[0] + dy * ex[1]) / fw  # across the face, 0 at the nose
        v = (dx * ey[0] + dy * ey[1]) / fw  # down the face, 0 at the eyes
        kind, _, second = texture.partition("/")
        skin = appearance.skin_tone(rgb, face.landmarks) if color == "skin" else None
        c0 = self._rgb(color, rng, skin)
        col = _pattern(kind, u, v, c0, self._rgb(second or color, rng, skin), rng)

        # shading: cylinder across the face, light from above, folds, edge darkening, scene light
        shade = 1.0 - 0.55 * np.clip(np.abs(u) / 0.55, 0, 1) ** 2.2 - 0.08 * (v - 0.6)
        if mask_type == "surgical":
            top_v = float(((poly - o) @ ey).min()) / fw
            bot_v = float(((poly - o) @ ey).max()) / fw
            phase = (v - top_v) / max(bot_v - top_v, 1e-3) * 3.0  # three pleats
            fold = phase % 1.0
            shade = shade * (0.86 + 0.16 * fold) - 0.1 * np.exp(
                -(((phase % 1.0) - 0.02) ** 2) / 0.002
            )
        elif mask_type in ("KN95", "cloth"):
            shade = shade - 0.12 * np.exp(-(u**2) / 0.0004) * (v > 0.3)  # centre seam
        elif mask_type == "N95":
            shade = shade + 0.1 * np.exp(-((u**2) + (v - 0.85) ** 2) / 0.05)  # dome highlight
        soft = cv2.GaussianBlur(alpha, (0, 0), max(fw * 0.02, 0.8))
        shade = shade * (0.8 + 0.2 * soft)
        grain = 1.0 + 0.03 * (rng.standard_normal(alpha.shape).astype(np.float32))
        face_roi = rgb[y0:y1, x0:x1]
        inside = alpha > 0.5
        if self.look.shading:
            light = appearance.illumination(face_roi, alpha, fw, float(rng.uniform(0.6, 1.1)))
            scene = appearance.scene_gain(face_roi, alpha, rng) * light
        else:
            lum = float(face_roi[inside].mean()) if inside.any() else 128.0
            scene = float(np.clip((lum / 135.0) ** 0.5, 0.6, 1.1))
        col = np.clip(col * (shade * grain * scene)[..., None], 0, 255).astype(np.float32)

        out = composite(rgb, col * alpha[..., None], alpha, x0, y0)
        full = np.zeros((h, w), np.float32)
        full[y0:y1, x0:x1] = alpha
        if self.look.loops:
            out, full = add_ear_loops(out, full, face.landmarks, poly, c0, rng)
        return Rendered(out, full, mask_type, color, texture)


def add_ear_loops(
    rgb: np.ndarray,
    alpha: np.ndarray,
    pts: np.ndarray,
    poly: np.ndarray,
    color: np.ndarray,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray]:
    """Elastic loops from the mask's side corners to the ears, composited outside the mask body
    only and trimmed below the eye line; returns the new image and the combined alpha."""
    o, ex, ey, fw = face_frame(pts)
    u = (poly - o) @ ex
    corners = []
    nose_u = float((pts[30] - o) @ ex)
    for side, jaw in ((-1, pts[0]), (1, pts[16])):
        if abs(float((jaw - o) @ ex) - nose_u) < 0.36 * fw:
            continue  # head turned away on this side: its ear (and loop) is hidden
        far = poly[np.argsort(side * u)[-len(poly) // 4 :]]  # the quarter of points on that side
        fv = (far - o) @ ey
        top, bottom = far[np.argmin(fv)], far[np.argmax(fv)]
        ear = jaw.astype(np.float64) + side * 0.03 * fw * ex + 0.05 * fw * ey
        corners += [(top, ear), (bottom, ear + 0.06 * fw * ey)]
    if not corners:
        return rgb, alpha
    h, w = alpha.shape
    loops = appearance.ear_loops((h, w), corners, max(0.9, 0.014 * fw))
    loops *= below_eye_line(pts, 0, 0, w, h) * float(rng.uniform(0.6, 0.95))
    loops = np.clip(loops - alpha, 0.0, 1.0)  # only where the mask body is not
    ys, xs = np.nonzero(loops > 0)
    if not len(ys):
        return rgb, alpha
    y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    a = loops[y0:y1, x0:x1]
    shade = np.clip(color * 1.05 + 12, 0, 255).astype(np.float32)
    out = composite(rgb, np.broadcast_to(shade, a.shape + (3,)) * a[..., None], a, x0, y0)
    return out, np.clip(alpha + loops, 0.0, 1.0)
