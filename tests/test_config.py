"""Settings written once: command-line options derived from the dataclass fields and function
signatures they configure, and notebook parameters generated from the presets."""

from __future__ import annotations

import ast
import dataclasses
import inspect

import pytest

from maskdet.__main__ import BENCHES, build_parser
from maskdet.pipeline import use_preset
from maskdet.training.config import (
    ABLATION_PRESETS,
    PARAM_NOTES,
    RUN_PRESETS,
    TrainConfig,
    notebook_params,
    options_of,
)


def test_train_options_are_the_config_fields_with_their_defaults():
    parser = build_parser()
    a = parser.parse_args(["train"])
    assert TrainConfig(**options_of(TrainConfig, a)) == TrainConfig()
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    assert fields <= set(vars(a))  # every field has an option
    changed = parser.parse_args(
        [
            "train",
            "--epochs",
            "3",
            "--batch-size",
            "8",
            "--lr",
            "0.001",
            "--weight-decay",
            "0.05",
            "--no-pretrained",
            "--limit",
            "12",
            "--optimizer",
            "adamw",
            "--stop-after",
            "1",
            "--no-test-preds",
        ]
    )
    cfg = TrainConfig(**options_of(TrainConfig, changed))
    assert (cfg.epochs, cfg.batch_size, cfg.lr, cfg.weight_decay) == (3, 8, 0.001, 0.05)
    assert (cfg.pretrained, cfg.limit, cfg.optimizer, cfg.stop_after) == (False, 12, "adamw", 1)
    assert cfg.test_preds is False and isinstance(cfg.epochs, int) and isinstance(cfg.lr, float)
    with pytest.raises(SystemExit):  # choices come from the field too
        parser.parse_args(["train", "--arch", "vgg16"])


@pytest.mark.parametrize("target", sorted(BENCHES))
def test_bench_options_are_the_function_parameters(target):
    fn, _ = BENCHES[target]
    a = build_parser().parse_args(["bench", target])
    want = {
        name: p.default
        for name, p in inspect.signature(fn).parameters.items()
        if p.default is not inspect.Parameter.empty
    }
    assert options_of(fn, a) == want


def test_presets_take_the_training_defaults_once():
    full, train = RUN_PRESETS["full"], TrainConfig()
    assert (full["EPOCHS"], full["BATCH_SIZE"], full["LR"]) == (
        train.epochs,
        train.batch_size,
        train.lr,
    )
    assert ABLATION_PRESETS["full"]["batch_size"] == train.batch_size
    assert set(RUN_PRESETS["smoke"]) == set(RUN_PRESETS["demo"]) == set(RUN_PRESETS["full"])


def test_notebook_params_start_from_preset_auto_and_fill_to_each_preset():
    names = ["DATA_DIR", "EPOCHS", "LIMIT", "PRETRAINED", "LOADER"]
    text = notebook_params(names)
    tree = ast.parse(text)
    values = {n.targets[0].id: ast.literal_eval(n.value) for n in tree.body}
    assert list(values) == ["PRESET", *names] and values["PRESET"] == "auto"
    demo, full = RUN_PRESETS["demo"], RUN_PRESETS["full"]
    for k in names:  # written out when demo and full share it, else left to the preset
        assert values[k] == (demo[k] if demo[k] == full[k] else None), k
    lines = {line.split(" =")[0]: line for line in text.splitlines() if " = " in line}
    assert lines["EPOCHS"].endswith(f"# demo: {demo['EPOCHS']}, full: {full['EPOCHS']}")
    assert lines["LOADER"].endswith(f"# {PARAM_NOTES['LOADER']}")  # same value in both
    assert lines["DATA_DIR"] == 'DATA_DIR = None  # demo: "data/demo", full: "data/full"'
    for preset in ("demo", "full"):
        ns = dict(values, DEVICE="cuda" if preset == "full" else "cpu")
        assert use_preset("auto", ns) == preset
        assert {k: ns[k] for k in names} == {k: RUN_PRESETS[preset][k] for k in names}
