"""Stage 01 (notebook 01): get the faces, crop them once at one framing, split by identity.

Modules: :mod:`.data`, :mod:`.figures`, :mod:`.layout`.

Public names, by module:

- :mod:`.data`: ``download_and_prepare``
"""

from ..core.exports import lazy_exports

__getattr__, __all__ = lazy_exports(__name__, {"download_and_prepare": "data"})
