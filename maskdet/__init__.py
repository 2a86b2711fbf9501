"""maskdet: train and evaluate a ResNet-50 that tells whether a face wears a mask.

One flat helper package shared by the notebooks in ``notebooks/`` and by the command line
``python -m maskdet``, one module per concept (the README's "Code layout" lists them). Values
every stage shares (sizes, splits, labels, paths) are in :mod:`maskdet.constants`, settings in
:mod:`maskdet.config`.
"""

__version__ = "0.1.0"
