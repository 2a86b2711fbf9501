"""maskdet: train and evaluate a ResNet-50 that tells whether a face wears a mask.

One flat helper package shared by the notebooks in ``notebooks/`` and by the command line
``python -m maskdet``. One module per concept: ``imageio`` (safe reading and the one face
writer), ``manifest`` (the CSV that accounts for every image), ``data`` (stage 01: download,
crop, identity split), ``synthesis`` (stage 02: masked twins), ``loader``, ``model``, ``train``.
"""

__version__ = "0.1.0"

LABELS = {"not_wearing_mask": 0, "wearing_mask": 1}
"""Label convention used everywhere: wearing_mask = 1, not_wearing_mask = 0."""
