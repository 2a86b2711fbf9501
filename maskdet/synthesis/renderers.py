"""The synthesis backends behind one small registry: stage 02 looks a backend up by name.

A backend is a name, a way to make its renderer (``render(rgb, face, rng) -> Rendered``, in a
given :class:`~maskdet.synthesis.appearance.Look`) and, when it needs something from outside the project,
a way to find it: ``masktheface`` (upstream MaskTheFace through :mod:`masktheface_patch`; needs a
checkout), ``builtin`` (:mod:`maskdet.synthesis.masks`; needs nothing) and ``mixed`` (each image drawn by
one of the two at random, so that a model cannot learn one renderer's style). Without a choice,
the first registered backend whose needs are met is used: a machine with a MaskTheFace checkout
uses it, one without the builtin. ``occluder`` (:mod:`maskdet.synthesis.occluders`) draws hard negatives,
not masks: it is never a stage-02 mask backend.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from masktheface_patch import MaskTheFaceRenderer, find_masktheface_dir

from .appearance import Look
from .landmarks import Face
from .masks import BuiltinRenderer, Rendered
from .occluders import OccluderRenderer

MIXED_P = 0.5
"""``mixed``: the probability that an image is drawn by MaskTheFace (else by the builtin)."""


@dataclass(frozen=True)
class Backend:
    """A synthesizer: its name, its renderer, and how to find what it needs (None: nothing)."""

    name: str
    make: Callable[[Path | None, Look], object]
    locate: Callable[[str | os.PathLike | None], Path | None] | None = None
    found: str = ""
    """Why it is the default when ``locate`` finds what it needs (``{}``: where)."""
    absent: str = ""
    """What was not found, when another backend is the default instead."""
    missing: str = ""
    """What to provide when it is asked for and ``locate`` finds nothing."""
    masks: bool = True
    """False for a renderer of hard negatives (not a choice for the masked twins)."""


BACKENDS: dict[str, Backend] = {}


def register(backend: Backend) -> Backend:
    """Add a backend (the order of registration is the order of preference)."""
    BACKENDS[backend.name] = backend
    return backend


register(
    Backend(
        "masktheface",
        MaskTheFaceRenderer,
        find_masktheface_dir,
        found="default: upstream checkout found at {}",
        absent="no MaskTheFace checkout found (arg, $MASKTHEFACE_DIR, third_party/, /content/)",
        missing="backend masktheface needs an upstream checkout: pass --masktheface-dir "
        "or set MASKTHEFACE_DIR (colab_setup.sh clones it)",
    )
)
register(Backend("builtin", lambda _, look: BuiltinRenderer(look)))


class MixedRenderer:
    """Both synthesizers in one data set: each image is drawn by one of them at random (from its
    own seeded RNG, so the choice does not depend on the worker count)."""

    name = "mixed"

    def __init__(self, *renderers) -> None:
        self.renderers = renderers

    def preload(self) -> None:
        for r in self.renderers:
            if hasattr(r, "preload"):
                r.preload()

    def render(self, rgb: np.ndarray, face: Face, rng: np.random.Generator) -> Rendered:
        r = self.renderers[0] if rng.random() < MIXED_P else self.renderers[1]
        out = r.render(rgb, face, rng)
        out.backend = r.name
        return out


register(
    Backend(
        "mixed",
        lambda found, look: MixedRenderer(MaskTheFaceRenderer(found, look), BuiltinRenderer(look)),
        find_masktheface_dir,
        missing="backend mixed needs an upstream MaskTheFace checkout: pass --masktheface-dir "
        "or set MASKTHEFACE_DIR (colab_setup.sh clones it)",
    )
)
register(Backend("occluder", lambda _, look: OccluderRenderer(), masks=False))
MASK_BACKENDS = [name for name, b in BACKENDS.items() if b.masks]
"""The choices for stage 02's masked twins."""


def resolve_backend(
    name: str | None, resource: str | os.PathLike | None = None, verbose: bool = True
) -> tuple[str, Path | None]:
    """(backend, what it needs) for ``name``, or for the first backend whose needs are met when
    ``name`` is None. ``resource``: what the backend needs (a MaskTheFace checkout), if given."""
    if name is not None and name not in MASK_BACKENDS:
        raise ValueError(f"backend must be one of {tuple(MASK_BACKENDS)}, got {name!r}")
    absent: list[str] = []
    found = None
    for backend in [BACKENDS[name]] if name else BACKENDS.values():
        if backend.locate is None:
            break
        found = backend.locate(resource)
        if found is not None:
            break
        if name:
            raise FileNotFoundError(backend.missing)
        absent.append(backend.absent)
    if verbose:
        why = (
            "asked for"
            if name
            else backend.found.format(found)
            if found
            else "; ".join(["default: " + a for a in absent] or ["default"])
        )
        print(f"synthesis backend: {backend.name} ({why})")
    return backend.name, found


def make_renderer(
    name: str, resource: str | os.PathLike | None = None, look: Look | str | None = None
):
    """The renderer of backend ``name`` in ``look`` (default: the real look); what it needs is
    found when ``resource`` is None."""
    backend = BACKENDS[name]
    if resource is None and backend.locate is not None:
        resource = backend.locate(None)
    return backend.make(resource, Look.parse(look))
