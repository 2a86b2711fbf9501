"""Stage 03 (notebook 03): the augmented 112x112 loaders, per image and cached per batch.

Modules: :mod:`.augment`, :mod:`.augment_presets`, :mod:`.augment_warps`, :mod:`.batch`,
:mod:`.cache`, :mod:`.distributed`, :mod:`.figures`, :mod:`.jpeg`, :mod:`.loader`,
:mod:`.walkthrough`.

Public names, by module:

- :mod:`.loader`: ``make_loaders``, ``CachedLoader``, ``FaceDataset``, ``FaceLoader``
- :mod:`.batch`: ``Batch``
- :mod:`.augment_presets`: ``AugmentConfig``, ``AUGMENT_PRESETS``
"""

from ..core.exports import lazy_exports

__getattr__, __all__ = lazy_exports(
    __name__,
    {
        "make_loaders": "loader",
        "CachedLoader": "loader",
        "FaceDataset": "loader",
        "FaceLoader": "loader",
        "Batch": "batch",
        "AugmentConfig": "augment_presets",
        "AUGMENT_PRESETS": "augment_presets",
    },
)
