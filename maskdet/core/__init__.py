"""The shared core: what several stages use, and nothing that belongs to one stage.

Values every stage shares (:mod:`.constants`), the one-line errors, the machine
(:mod:`.system`), safe image reading and the one face writer (:mod:`.imageio`), the
manifest that accounts for every image, each stage's input check, the download table,
the metrics, the network and its checkpoints, the real-mask set used for measuring, and
the inference core (the classifier for face crops and the prediction files) that
training, evaluation and the kiosk all use.

Modules: :mod:`.archive`, :mod:`.checkpoint`, :mod:`.checks`, :mod:`.constants`,
:mod:`.download`, :mod:`.errors`, :mod:`.exports`, :mod:`.guard`, :mod:`.imageio`,
:mod:`.inference`, :mod:`.manifest`, :mod:`.metrics`, :mod:`.model`, :mod:`.progress`,
:mod:`.real`, :mod:`.system`.

Public names, by module:

- :mod:`.constants`: ``CLASS_NAMES``, ``LABELS``, ``SPLITS``, ``ROOT``
- :mod:`.errors`: ``UsageError``, ``one_line``
- :mod:`.manifest`: ``read_manifest``, ``write_manifest``, ``usable``
- :mod:`.model`: ``build_model``
- :mod:`.checkpoint`: ``load_checkpoint``, ``load_model``
- :mod:`.inference`: ``MaskClassifier``, ``Preprocess``, ``read_predictions``, ``write_predictions``
- :mod:`.real`: ``read_real_set``, ``real_metrics``
"""

from .exports import lazy_exports

__getattr__, __all__ = lazy_exports(
    __name__,
    {
        "CLASS_NAMES": "constants",
        "LABELS": "constants",
        "SPLITS": "constants",
        "ROOT": "constants",
        "UsageError": "errors",
        "one_line": "errors",
        "read_manifest": "manifest",
        "write_manifest": "manifest",
        "usable": "manifest",
        "build_model": "model",
        "load_checkpoint": "checkpoint",
        "load_model": "checkpoint",
        "MaskClassifier": "inference",
        "Preprocess": "inference",
        "read_predictions": "inference",
        "write_predictions": "inference",
        "read_real_set": "real",
        "real_metrics": "real",
    },
)
