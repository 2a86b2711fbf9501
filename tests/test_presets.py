"""PRESET = "auto" in every notebook (issue 12 A): the assignment (``full``: 50 epochs, batch 64,
lr 0.01, all of LFW) when training runs on a CUDA GPU, ``demo`` on a CPU with a one-line notice;
papermill's values and ``run --preset`` still win. Notebook 04 is executed for real (papermill,
up to the cell that builds the training config) with the parameters papermill would pass."""

from __future__ import annotations

import json

import nbformat
import papermill as pm
import pytest
import torch

from maskdet.core.errors import UsageError
from maskdet.pipeline import notebooks, resolve_preset, use_preset
from maskdet.training.config import RUN_PRESETS

from .conftest import ROOT


def test_every_notebook_starts_its_parameters_from_preset_auto():
    for path in notebooks():
        nb = nbformat.read(path, as_version=4)
        params = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
        assert len(params) == 1, path.name
        assert params[0].source.startswith('PRESET = "auto"'), path.name
        assert "use_preset(PRESET, globals()" in nb.cells[nb.cells.index(params[0]) + 1].source


def test_auto_is_full_on_cuda_and_demo_with_a_notice_on_a_cpu(capsys):
    assert resolve_preset("auto", "cuda") == "full"
    assert resolve_preset("auto", "cuda:1") == "full"
    assert resolve_preset("auto", "cpu") == "demo"
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 3 and "full" in out[0] and "no CUDA GPU" in out[2]
    assert 'PRESET = "full"' in out[2] and "Change runtime type" in out[2]
    expected = "full" if torch.cuda.is_available() else "demo"
    assert resolve_preset("auto", "auto") == expected
    assert resolve_preset("smoke", "cuda") == "smoke"
    with pytest.raises(UsageError, match="PRESET must be auto or one of"):
        resolve_preset("fulll")


def test_use_preset_fills_only_what_was_left_at_none():
    ns = {"DEVICE": "cuda", "EPOCHS": None, "BATCH_SIZE": 16, "LIMIT": None, "OTHER": None}
    assert use_preset("auto", ns) == "full"
    assert ns["EPOCHS"] == RUN_PRESETS["full"]["EPOCHS"] == 50
    assert ns["BATCH_SIZE"] == 16 and ns["LIMIT"] == 0 and ns["OTHER"] is None


def _run_04_until_config(tmp_path, parameters: dict) -> tuple[dict, str]:
    """Notebook 04 executed by papermill with ``parameters`` up to the cell that builds
    ``cfg`` (training itself is left out); the config and the notebook's printed text."""
    nb = nbformat.read(ROOT / "notebooks" / "04_train_resnet50.ipynb", as_version=4)
    end = next(i for i, c in enumerate(nb.cells) if "cfg = TrainConfig(" in c.source)
    nb.cells = nb.cells[: end + 1]
    nb.cells.append(
        nbformat.v4.new_code_cell(
            "import dataclasses, json\n"
            "print('CFG', json.dumps({**dataclasses.asdict(cfg), 'PRESET': PRESET}))"
        )
    )
    src, out = tmp_path / "04_until_config.ipynb", tmp_path / "executed.ipynb"
    nbformat.write(nb, src)
    pm.execute_notebook(
        str(src),
        str(out),
        parameters=parameters,
        cwd=str(ROOT),
        kernel_name="python3",
        progress_bar=False,
    )
    text = "".join(
        o.get("text", "")
        for c in nbformat.read(out, as_version=4).cells
        for o in c.get("outputs", [])
        if o.get("output_type") == "stream"
    )
    line = next(x for x in text.splitlines() if x.startswith("CFG "))
    return json.loads(line[4:]), text


@pytest.mark.slow
def test_run_all_of_04_on_a_gpu_trains_the_assignment(masked_mini, tmp_path):
    # what a Colab GPU gives `auto`: training on CUDA; DATA_DIR only so that the data check passes
    cfg, text = _run_04_until_config(tmp_path, {"DEVICE": "cuda", "DATA_DIR": str(masked_mini)})
    assert cfg["PRESET"] == "full" and "PRESET auto -> full" in text
    assert (cfg["epochs"], cfg["batch_size"], cfg["lr"]) == (50, 64, 0.01)
    assert cfg["limit"] is None and cfg["val_limit"] is None and cfg["pretrained"] is True
    assert cfg["device"] == "cuda" and cfg["out"] == "runs/full"
    assert "50 epochs, batch 64, lr 0.01, resnet50 on cuda" in text


@pytest.mark.slow
def test_04_on_a_cpu_runs_the_demo_and_papermill_values_win(masked_mini, tmp_path):
    cfg, text = _run_04_until_config(tmp_path, {"DEVICE": "cpu", "DATA_DIR": str(masked_mini)})
    assert cfg["PRESET"] == "demo" and "no CUDA GPU" in text
    demo = RUN_PRESETS["demo"]
    assert (cfg["epochs"], cfg["batch_size"], cfg["limit"]) == (
        demo["EPOCHS"],
        demo["BATCH_SIZE"],
        demo["LIMIT"] or None,
    )
    cfg, _ = _run_04_until_config(
        tmp_path, {"DEVICE": "cuda", "PRESET": "demo", "EPOCHS": 20, "DATA_DIR": str(masked_mini)}
    )
    assert (cfg["epochs"], cfg["batch_size"], cfg["out"]) == (
        20,
        demo["BATCH_SIZE"],
        demo["RUN_DIR"],
    )


def test_auto_follows_the_preset_stage_01_recorded_when_the_runtime_changes(
    tmp_path, monkeypatch, capsys
):
    """Stage 01 on a CPU runtime with smoke, then a GPU runtime for 04: auto stays smoke (the
    data exist for it), with one line saying why; stage 01 itself chooses by the runtime."""
    from maskdet.pipeline import record_preset

    monkeypatch.chdir(tmp_path)  # the presets' relative DATA_DIRs: data/smoke, data/demo, ...
    record_preset(RUN_PRESETS["smoke"]["DATA_DIR"], "smoke")
    ns = {"DEVICE": "cuda", "DATA_DIR": None, "RUN_DIR": None, "EPOCHS": None}
    assert use_preset("auto", ns) == "smoke"
    assert (ns["DATA_DIR"], ns["RUN_DIR"], ns["EPOCHS"]) == ("data/smoke", "runs/smoke", 1)
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 2 and out[0].startswith("PRESET auto -> smoke: stage 01 made data/smoke")
    assert out[1].startswith("Preset smoke, unlike the assignment:")  # report.preset_statement
    first = {"DEVICE": "cuda", "DATA_DIR": None}
    assert use_preset("auto", first, follow_stage01=False) == "full"  # stage 01: the runtime
    assert use_preset("demo", {"DEVICE": "cuda", "DATA_DIR": None}) == "demo"  # a name wins

    record_preset("data/demo", "demo")  # a later stage 01 with another preset: the latest wins
    (tmp_path / "data/smoke/preset.json").write_text(
        '{"preset": "smoke", "written": "2000-01-01 00:00:00"}'
    )
    assert use_preset("auto", {"DEVICE": "cuda", "DATA_DIR": None}) == "demo"
    given = tmp_path / "elsewhere"  # a DATA_DIR set by hand: its own record, or the runtime
    assert use_preset("auto", {"DEVICE": "cpu", "DATA_DIR": str(given)}) == "demo"
    record_preset(given, "smoke")
    assert use_preset("auto", {"DEVICE": "cuda", "DATA_DIR": str(given)}) == "smoke"
    (given / "preset.json").write_text("not json")  # a damaged record: the runtime decides
    assert use_preset("auto", {"DEVICE": "cuda", "DATA_DIR": str(given)}) == "full"


@pytest.mark.slow
def test_04_on_a_gpu_follows_a_smoke_stage_01(masked_mini, tmp_path):
    """Notebook 04 for real (papermill) on a 'GPU' runtime after stage 01 recorded smoke."""
    import shutil

    from maskdet.pipeline import record_preset

    data = tmp_path / "data"
    shutil.copytree(masked_mini, data, ignore=shutil.ignore_patterns("cache"))
    record_preset(data, "smoke")
    cfg, text = _run_04_until_config(tmp_path, {"DEVICE": "cuda", "DATA_DIR": str(data)})
    smoke = RUN_PRESETS["smoke"]
    assert cfg["PRESET"] == "smoke" and "PRESET auto -> smoke: stage 01 made" in text
    assert (cfg["epochs"], cfg["batch_size"], cfg["out"]) == (
        smoke["EPOCHS"],
        smoke["BATCH_SIZE"],
        smoke["RUN_DIR"],
    )
    assert "PRESET auto -> full" not in text
