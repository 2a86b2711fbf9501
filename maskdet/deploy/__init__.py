"""Stage 06 (notebook 06): real photos, the kiosk, exported models, Grad-CAM.

Modules: :mod:`.clips`, :mod:`.detect`, :mod:`.export`, :mod:`.gradcam`, :mod:`.kiosk`,
:mod:`.photos`, :mod:`.predict`.

Public names, by module:

- :mod:`.predict`: ``iter_predictions``, ``predict_paths``
- :mod:`.detect`: ``FaceDetector``
- :mod:`.kiosk`: ``run_kiosk``
- :mod:`.export`: ``export_model``
"""

from ..core.exports import lazy_exports

__getattr__, __all__ = lazy_exports(
    __name__,
    {
        "iter_predictions": "predict",
        "predict_paths": "predict",
        "FaceDetector": "detect",
        "run_kiosk": "kiosk",
        "export_model": "export",
    },
)
