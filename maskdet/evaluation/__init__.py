"""Stage 05 (notebook 05): evaluate a run on the test split and on real masks, ablations.

Modules: :mod:`.ablate`, :mod:`.evalsets`, :mod:`.evaluate`, :mod:`.figures`, :mod:`.worn`.

Public names, by module:

- :mod:`.evaluate`: ``evaluate_run``, ``evaluate_real``
- :mod:`.ablate`: ``run_ablations``, ``summarize``
- :mod:`.worn`: ``worn_wrong_report``, ``worn_table``
- :mod:`.evalsets`: ``real_dir``, ``photos_dir``
"""

from ..core.exports import lazy_exports

__getattr__, __all__ = lazy_exports(
    __name__,
    {
        "evaluate_run": "evaluate",
        "evaluate_real": "evaluate",
        "run_ablations": "ablate",
        "summarize": "ablate",
        "worn_wrong_report": "worn",
        "worn_table": "worn",
        "real_dir": "evalsets",
        "photos_dir": "evalsets",
    },
)
