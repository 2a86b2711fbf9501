"""What makes a synthetic mask look like a real one; shared by both synthesis backends.

- :data:`PALETTE`: mask colours with the weights they have in real photos (light-blue and white
  surgical masks, black cloth masks, then cream, grey, navy, pink and a tail of others), instead
  of a uniform draw over saturated colours that real masks rarely have.
- :func:`recolor`: give a template a new colour through its luminance, so the template's own
  folds and pleats stay (a flat blend with the colour washes them out).
- :func:`illumination`: a low-frequency light field of the face under the mask, so the mask
  darkens and lightens with the skin it covers (side light, shadows under the nose and chin).
- :func:`ear_loops`: the elastic from the mask's side corners to the ear.
- :func:`jitter_points`: small random changes of mask width, height and position.
- :func:`skin_tone` and :func:`low_contrast_rgb` (issue 18, the ``skin`` lever, opt-in): masks
  in cream, beige and the face's own skin tone, the real masks a model misses most.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

PALETTE: dict[str, tuple[str, float]] = {
    "light_blue": ("#9cc6e6", 0.19),
    "white": ("#f1f1ee", 0.17),
    "black": ("#1f1f22", 0.12),
    "grey": ("#8d9095", 0.07),
    "navy": ("#27354f", 0.04),
    "blue": ("#3566ad", 0.05),
    "cream": ("#e4d9c3", 0.04),
    "beige": ("#cdb699", 0.02),
    "pink": ("#e5a8ba", 0.05),
    "red": ("#b3262e", 0.04),
    "orange": ("#e07a2e", 0.03),
    "yellow": ("#e8c547", 0.03),
    "purple": ("#6e4f8f", 0.03),
    "teal": ("#5aaeb0", 0.03),
    "green": ("#5f8751", 0.02),
    "brown": ("#5e4536", 0.02),
    "khaki": ("#8e8a5c", 0.01),
}
"""name -> (sRGB hex, weight in the draw): light-blue and white surgical masks and black cloth
masks first, then a long tail of cloth colours (about one real mask in ten is red, orange,
yellow, pink, purple or green, and patterned cloth masks are common)."""
DARK = ("black", "navy", "brown", "grey")


def hex_rgb(hex_color: str) -> np.ndarray:
    h = hex_color.lstrip("#")
    return np.array([int(h[i : i + 2], 16) for i in (0, 2, 4)], dtype=np.float32)


def draw_color(rng: np.random.Generator, names: list[str] | None = None) -> str:
    """A palette colour name drawn with the real-photo weights (restricted to ``names``)."""
    names = names or list(PALETTE)
    p = np.array([PALETTE[n][1] for n in names], np.float64)
    return str(rng.choice(names, p=p / p.sum()))


def color_rgb(name: str, rng: np.random.Generator | None = None) -> np.ndarray:
    """The colour's RGB, with a small random shift of brightness and tint when ``rng`` is given
    (no two real masks of one colour look the same)."""
    c = hex_rgb(PALETTE[name][0])
    if rng is None:
        return c
    c = c * float(rng.uniform(0.9, 1.06)) + rng.normal(0, 4, 3).astype(np.float32)
    return np.clip(c, 0, 255).astype(np.float32)


def luminance(rgb: np.ndarray) -> np.ndarray:
    rgb = rgb.astype(np.float32)
    return 0.299 * rgb[..., 0] + 0.587 * rgb[..., 1] + 0.114 * rgb[..., 2]


def recolor(
    rgb: np.ndarray, alpha: np.ndarray, color: np.ndarray, keep: float = 0.85
) -> np.ndarray:
    """``rgb`` (float32 or uint8, H x W x 3) repainted in ``color`` through its luminance.

    The template's shading relative to its mean (folds, pleats, edges) is kept at strength
    ``keep``; the mean becomes the new colour. Dark colours keep the shading as an additive
    term so that a black mask still shows its folds."""
    lum = luminance(rgb)
    inside = alpha > 0.5
    mean = float(lum[inside].mean()) if inside.any() else float(lum.mean()) or 1.0
    rel = lum / max(mean, 1.0)
    mult = 1.0 + keep * (rel - 1.0)
    target = color.reshape(1, 1, 3).astype(np.float32)
    add = (1.0 - float(target.mean()) / 255.0) * 60.0 * keep * (rel - 1.0)
    out = target * np.clip(mult, 0.2, 1.8)[..., None] + add[..., None]
    return np.clip(out, 0, 255).astype(np.float32)


def illumination(
    face_rgb: np.ndarray, alpha: np.ndarray, face_width: float, strength: float
) -> np.ndarray:
    """Light field (H x W float32, mean 1 under the mask) of the face region ``face_rgb``.

    The skin's luminance, low-passed at a fifth of the face width (features gone, light and
    shadow kept), divided by its mean under the mask, raised to ``strength`` (0 = flat)."""
    lum = luminance(face_rgb) + 1.0
    sigma = max(face_width * 0.2, 1.5)
    low = cv2.GaussianBlur(lum, (0, 0), sigma)
    inside = alpha > 0.5
    mean = float(low[inside].mean()) if inside.any() else float(low.mean())
    field = np.clip(low / max(mean, 1.0), 0.45, 1.6) ** strength
    return field.astype(np.float32)


def scene_gain(face_rgb: np.ndarray, alpha: np.ndarray, rng: np.random.Generator) -> float:
    """How bright the light on the face is, from its highlights (the 90th percentile of the
    luminance around the mask, so that dark skin does not read as dim light): a white mask in
    a dim photo is grey, in a well-lit one white."""
    lum = luminance(face_rgb)
    level = float(np.percentile(lum, 90)) if lum.size else 200.0
    return float(np.clip((level / 205.0) ** float(rng.uniform(0.4, 0.8)), 0.55, 1.08))


def ear_loops(
    shape: tuple[int, int],
    corners: list[tuple[np.ndarray, np.ndarray]],
    width: float,
) -> np.ndarray:
    """Alpha (float32, ``shape``) of thin elastic loops: each (start, ear) pair is drawn as a
    slightly curved anti-aliased line of ``width`` pixels."""
    h, w = shape
    ss = 4
    big = np.zeros((h * ss, w * ss), np.uint8)
    thick = max(1, int(round(width * ss)))
    for start, ear in corners:
        mid = (start + ear) / 2 + np.array([0.0, 0.04 * np.linalg.norm(ear - start)])
        t = np.linspace(0, 1, 16)[:, None]
        pts = (1 - t) ** 2 * start + 2 * (1 - t) * t * mid + t**2 * ear
        cv2.polylines(
            big, [np.round(pts * ss).astype(np.int32)], False, 255, thick, lineType=cv2.LINE_AA
        )
    return cv2.resize(big, (w, h), interpolation=cv2.INTER_AREA).astype(np.float32) / 255.0


def jitter_points(
    pts: np.ndarray, origin: np.ndarray, ex: np.ndarray, ey: np.ndarray, fw: float, rng
) -> np.ndarray:
    """``pts`` scaled along the face's axes (width x0.92-1.08, height x0.96-1.08) about
    ``origin`` and moved down or up by up to 2% of the face width."""
    sx, sy = rng.uniform(0.92, 1.08), rng.uniform(0.96, 1.08)
    dv = rng.uniform(-0.02, 0.02) * fw
    rel = pts - origin
    u, v = rel @ ex, rel @ ey
    return origin + np.outer(u * sx, ex) + np.outer(v * sy + dv, ey)


SKIN_P = 0.25
"""With the ``skin`` lever: the share of masks drawn in a low-contrast colour near the skin."""
CREAM = np.array([232.0, 220.0, 200.0], np.float32)
"""The cream a skin-tone mask is pulled towards (a cream or nude cloth mask)."""


def skin_tone(rgb: np.ndarray, pts: np.ndarray) -> np.ndarray:
    """The face's own skin colour (RGB float32): the per-channel median inside the hull of the
    jaw (points 1-15) and the nose bridge (29), i.e. cheeks, nose, mouth and chin, before any
    mask is drawn (the median ignores lips, nostrils and most of a beard's edge)."""
    h, w = rgb.shape[:2]
    hull = cv2.convexHull(np.round(pts[[*range(1, 16), 29]]).astype(np.int32))
    region = np.zeros((h, w), np.uint8)
    cv2.fillConvexPoly(region, hull, 1)
    inside = rgb[region > 0]
    if len(inside) < 16:
        inside = rgb.reshape(-1, 3)
    return np.median(inside, 0).astype(np.float32)


def low_contrast_rgb(skin: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A mask colour near ``skin``: its lightness scaled by 0.85-1.3, pulled towards
    :data:`CREAM` by 0-60%, and a small tint, so that the mask differs from the skin by a few
    tens of levels at most (cream, beige, nude and skin-tone masks)."""
    c = skin * float(rng.uniform(0.85, 1.3))
    pull = float(rng.uniform(0.0, 0.6))
    c = (1 - pull) * c + pull * CREAM + rng.normal(0, 5, 3).astype(np.float32)
    return np.clip(c, 0, 255).astype(np.float32)


LOOK_EXTRAS = ("skin", "prints")
"""Levers off in both bases (``real`` and ``legacy``) unless asked for with ``+name``."""


@dataclass(frozen=True)
class Look:
    """Which realism levers a renderer applies (each can be switched off for the ablation).

    ``palette``: ``real`` (:data:`PALETTE` weights, no gas masks) or ``legacy`` (the earlier
    uniform draws); ``shading``: follow the face's light (:func:`illumination`, :func:`scene_gain`);
    ``loops``: draw ear loops; ``jitter``: vary mask width, height and position.
    Opt-in (issue 18; builtin renderer only, off in both bases): ``skin``: a share
    (:data:`SKIN_P`) of masks in cream, beige or the face's own skin tone; ``prints``: patterned
    and printed cloth (plaid, florals, camouflage, logos besides stripes, checks and dots), on
    cloth masks and some surgical ones (:data:`maskdet.synthesis.masks.PRINT_TEXTURES`). One screening
    (2026-12-03, shared 2-core CPU; ResNet-18, random init, 3 epochs, 1,000 train images,
    default augmentation): ``../shared/realdev`` AUC 0.954 with ``real,+skin,+prints`` against
    0.966 with ``real``; cream/skin masks found 0.86 against 0.75 and other colours 0.73
    against 0.52, at a lower specificity (0.63 against 0.84)."""

    palette: str = "real"
    shading: bool = True
    loops: bool = True
    jitter: bool = True
    skin: bool = False
    prints: bool = False

    @classmethod
    def parse(cls, spec: str | Look | None) -> Look:
        """``real`` (every lever, the default), ``legacy`` (none: the renderers as before), or a
        base followed by changes: ``real,-loops,-jitter`` (real without loops and jitter),
        ``legacy,+shading`` (legacy with shading only), ``real,+skin,+prints`` (real with the
        opt-in :data:`LOOK_EXTRAS`)."""
        if isinstance(spec, Look):
            return spec
        parts = [s.strip() for s in (spec or "real").split(",") if s.strip()]
        base = parts[0] if parts and parts[0] in ("real", "legacy") else "real"
        on = base == "real"
        kw: dict = {"palette": base, "shading": on, "loops": on, "jitter": on}
        for part in parts[1:] if parts and parts[0] == base else parts:
            name = part.lstrip("+-")
            known = ("shading", "loops", "jitter", "palette", *LOOK_EXTRAS)
            if name not in known or part[0] not in "+-":
                raise ValueError(
                    f"unknown look {part!r}: use real, legacy, or a base with changes such as "
                    "real,-loops, legacy,+shading,+palette or real,+skin,+prints"
                )
            if name == "palette":
                kw["palette"] = "real" if part[0] == "+" else "legacy"
            else:
                kw[name] = part[0] == "+"
        return cls(**kw)

    @property
    def name(self) -> str:
        """The shortest spec that :meth:`parse` reads back as this look."""
        levers = ("shading", "loops", "jitter")
        real = [f"-{k}" for k in levers if not getattr(self, k)]
        legacy = [f"+{k}" for k in levers if getattr(self, k)]
        extras = [f"+{k}" for k in LOOK_EXTRAS if getattr(self, k)]
        if self.palette == "real":
            return ",".join(["real", *real, *extras])
        return ",".join(["legacy", *legacy, *extras])
