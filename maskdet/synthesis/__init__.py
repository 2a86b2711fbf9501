"""Stage 02 (notebook 02): a masked twin for every face, written next to it.

The driver (:mod:`.synthesis`), the registry of synthesizers (:mod:`.renderers`), the
builtin renderer (:mod:`.masks`), the hard negatives (:mod:`.occluders`), the mask
appearance (:mod:`.appearance`) and the face finding both backends share
(:mod:`.landmarks`); ``masktheface_patch/`` (top level) adapts upstream MaskTheFace.

Modules: :mod:`.appearance`, :mod:`.figures`, :mod:`.landmarks`, :mod:`.masking`, :mod:`.masks`,
:mod:`.occluders`, :mod:`.renderers`, :mod:`.shards`, :mod:`.stage02_record`, :mod:`.synthesis`.

Public names, by module:

- :mod:`.synthesis`: ``synthesize_dataset``, ``copy_faces``
- :mod:`.masking`: ``mask_files``
- :mod:`.shards`: ``Shard``
- :mod:`.renderers`: ``MASK_BACKENDS``, ``resolve_backend``
- :mod:`.appearance`: ``Look``
"""

from ..core.exports import lazy_exports

__getattr__, __all__ = lazy_exports(
    __name__,
    {
        "synthesize_dataset": "synthesis",
        "copy_faces": "synthesis",
        "mask_files": "masking",
        "Shard": "shards",
        "MASK_BACKENDS": "renderers",
        "resolve_backend": "renderers",
        "Look": "appearance",
    },
)
