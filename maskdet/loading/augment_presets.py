"""The train augmentation family's settings (:class:`AugmentConfig`) and its named presets.

Opt-in levers against real misses (issue 18; every one off in ``default``, so its draws and
bytes are unchanged): pose (``yaw_deg``/``pitch_deg``: a camera-rotation homography, a turned or
nodding head seen by a planar face; ``perspective``: a random keystone), detector-like framing
(``box_jitter``: the crop drawn as a face detector's box varies), ``inside`` (each crop shrunk
until it lies in the image: no reflected border), and no colour shortcut (``grey_p``: random
grayscale; strong ``hue``/``saturation`` ranges). :data:`LEVERS` names them; the presets
``default+<lever>`` and ``levers`` (all but ``inside``) select them by name (``--aug``). Their
warps: :mod:`maskdet.loading.augment_warps`.
"""

from __future__ import annotations

from dataclasses import dataclass, replace


@dataclass(frozen=True)
class AugmentConfig:
    """The train augmentation family; both loaders read the same settings."""

    scale: tuple[float, float] = (0.55, 1.0)  # area fraction kept by the random resized crop
    ratio: tuple[float, float] = (0.85, 1.18)  # aspect ratio range of the crop
    hflip: float = 0.5
    rotate_deg: float = 10.0  # uniform in [-rotate_deg, rotate_deg]
    brightness: float = 0.25
    contrast: float = 0.25
    saturation: float = 0.25
    hue: float = 0.03
    blur_p: float = 0.25
    blur_sigma: tuple[float, float] = (0.3, 1.6)
    lowres_p: float = 0.2
    lowres_side: tuple[int, int] = (28, 72)  # downsample to this side, then back up
    jpeg_p: float = 0.3
    jpeg_quality: tuple[int, int] = (30, 90)
    # issue 18's levers, each off by default (the default family's draws are unchanged)
    yaw_deg: float = 0.0  # head turned: camera rotation about the vertical axis, uniform +-
    pitch_deg: float = 0.0  # head nodding: camera rotation about the horizontal axis, uniform +-
    perspective: float = 0.0  # each corner moved by up to this fraction of the half-side
    box_jitter: float = 0.0  # detector-like box: side x exp(N(0, j)), centre moved N(0, j/2) sides
    inside: bool = False  # shrink a crop until its four corners lie in the image
    grey_p: float = 0.0  # probability of a grayscale image
    keep_face: bool = False  # keep the nose and mouth in view (``augment_warps.FACE_REGION``)

    @property
    def projective(self) -> bool:
        """Whether the crop is a homography (the pose, framing or inside levers), not affine."""
        return bool(
            self.yaw_deg
            or self.pitch_deg
            or self.perspective
            or self.box_jitter
            or self.inside
            or self.keep_face
        )

    @property
    def extra_draws(self) -> bool:
        """Whether a batch draws the levers' parameters (after the default family's)."""
        return self.projective or bool(self.grey_p)


LEVERS: dict[str, dict] = {
    "rotate": {"rotate_deg": 20.0, "keep_face": True},
    "yaw": {"yaw_deg": 30.0, "pitch_deg": 10.0, "keep_face": True},
    "perspective": {"perspective": 0.12, "keep_face": True},
    "box": {"box_jitter": 0.12, "keep_face": True},
    "grey": {"grey_p": 0.2},
    "hue": {"hue": 0.5, "saturation": 0.8},
    "inside": {"inside": True, "keep_face": True},
}
"""Issue 18's augmentation levers as changes to ``default``: ``rotate`` (up to 20 degrees),
``yaw`` (turned and nodding heads), ``perspective`` (keystone), ``box`` (framing as a detector's
box varies), ``grey`` (one image in five grayscale), ``hue`` (any hue, saturation 0.2-1.8),
``inside`` (no pixel read from outside the image: no reflected border, at the price of tighter
crops). The geometric ones keep the nose and mouth in view (the label's evidence). ``levers``:
all but ``inside``. Opt-in: not measured on 60-minute runs. One screening (2026-12-03, the shared
2-core CPU, load 6-9; ResNet-18, random init, 3 epochs, 1,000 train images of 700 LFW people,
builtin masks, ``train --aug levers``): ``../shared/realdev`` AUC 0.808 with ``levers`` and the
``real,+skin,+prints`` look, 0.966 with ``default`` and ``real`` (train loss 0.67 against 0.23:
3 epochs do not learn the harder task)."""


def _with_levers(base: AugmentConfig, *names: str) -> AugmentConfig:
    """``base`` with the changes of the levers ``names`` (:data:`LEVERS`)."""
    changes: dict = {}
    for name in names:
        changes |= LEVERS[name]
    return replace(base, **changes)


AUGMENT_PRESETS: dict[str, AugmentConfig] = {
    "default": AugmentConfig(),
    "light": AugmentConfig(scale=(0.7, 1.0), rotate_deg=5.0, blur_p=0.0, lowres_p=0.0, jpeg_p=0.0),
    "none": AugmentConfig(
        scale=(0.766, 0.766),
        ratio=(1.0, 1.0),
        hflip=0.0,
        rotate_deg=0.0,
        brightness=0.0,
        contrast=0.0,
        saturation=0.0,
        hue=0.0,
        blur_p=0.0,
        lowres_p=0.0,
        jpeg_p=0.0,
    ),
}
BASE_AUGMENTS = tuple(AUGMENT_PRESETS)
"""The presets before issue 18's levers (the ones the notebooks list)."""
AUGMENT_PRESETS |= {f"default+{k}": _with_levers(AUGMENT_PRESETS["default"], k) for k in LEVERS}
AUGMENT_PRESETS["levers"] = _with_levers(
    AUGMENT_PRESETS["default"], *(k for k in LEVERS if k != "inside")
)
"""``none`` is the val/test view (centre 112 of 128) without randomness; ``default+<lever>``
adds one of :data:`LEVERS`, ``levers`` all of them but ``inside``."""


def get_augment(aug: str | AugmentConfig) -> AugmentConfig:
    """``aug`` itself, or the preset of that name (:data:`AUGMENT_PRESETS`)."""
    if isinstance(aug, AugmentConfig):
        return aug
    if aug not in AUGMENT_PRESETS:
        raise ValueError(
            f"unknown augmentation preset {aug!r}; choose from {sorted(AUGMENT_PRESETS)}"
        )
    return AUGMENT_PRESETS[aug]
