"""Stage 04 (notebook 04): train the ResNet-50, one metrics dict per epoch to every sink.

Modules: :mod:`.config`, :mod:`.estimate`, :mod:`.figures`, :mod:`.optim`, :mod:`.run_setup`,
:mod:`.scoring`, :mod:`.sinks`, :mod:`.tbread`, :mod:`.train`.

Public names, by module:

- :mod:`.config`: ``TrainConfig``, ``RUN_PRESETS``
- :mod:`.train`: ``train``, ``train_step``
- :mod:`.run_setup`: ``prepare_run``, ``probe_run``
- :mod:`.estimate`: ``estimate_training_time``
"""

from ..core.exports import lazy_exports

__getattr__, __all__ = lazy_exports(
    __name__,
    {
        "TrainConfig": "config",
        "RUN_PRESETS": "config",
        "train": "train",
        "train_step": "train",
        "prepare_run": "run_setup",
        "probe_run": "run_setup",
        "estimate_training_time": "estimate",
    },
)
