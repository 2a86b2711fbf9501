"""Run the notebooks top to bottom with a preset (``python -m maskdet run``).

Presets hold the parameters of every notebook (papermill injects them after each notebook's
``parameters`` cell): ``smoke`` for CI (seconds to minutes on lfw-mini), ``demo`` for a 2-core CPU
(under 15 minutes), ``full`` for a GPU (the assignment's 50 epochs on all of LFW).
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import papermill as pm
import torch
from IPython import get_ipython

from .core.constants import ROOT
from .core.errors import UsageError
from .core.system import storage_path
from .report import headline_numbers, preset_statement, write_report
from .training.config import RUN_PRESETS

PRESETS = RUN_PRESETS
"""Every notebook parameter per preset (defined once, in :mod:`maskdet.training.config`)."""


def in_colab() -> bool:
    return "google.colab" in sys.modules


def show_tensorboard(log_dir: str | os.PathLike) -> None:
    """On Colab, TensorBoard inside the notebook (it updates while training runs); elsewhere one
    line saying how to open it (``tensorboard --logdir LOG_DIR``) and that notebook 04 plots its
    scalars after training (:func:`maskdet.training.tbread.scalars_figure`)."""
    if not in_colab():
        print(
            f"TensorBoard: `tensorboard --logdir {log_dir}` shows it live beside this notebook "
            "(inside it on Colab); its scalars are plotted from the event files after training."
        )
        return
    ipython = get_ipython()
    ipython.run_line_magic("load_ext", "tensorboard")
    ipython.run_line_magic("tensorboard", f"--logdir {log_dir}")


def resolve_preset(preset: str = "auto", device: str = "auto") -> str:
    """The preset ``auto`` stands for: ``full`` when training runs on a CUDA GPU (``device``
    ``cuda``, or ``auto`` with one present), else ``demo`` with a one-line notice saying why and
    how to change it. Any other name is returned as it is (after checking it)."""
    if preset != "auto":
        if preset not in PRESETS:
            raise UsageError(f"PRESET must be auto or one of {', '.join(PRESETS)}, got {preset!r}")
        return preset
    device = str(device or "auto")
    gpu = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
    if gpu:
        name = torch.cuda.get_device_name(0) if torch.cuda.is_available() else device
        full = PRESETS["full"]
        print(
            f"PRESET auto -> full: a CUDA GPU ({name}), so the assignment's settings "
            f"({full['EPOCHS']} epochs, batch {full['BATCH_SIZE']}, lr {full['LR']}, all of LFW)"
        )
        return "full"
    demo = PRESETS["demo"]
    print(
        f"PRESET auto -> demo: no CUDA GPU here ({device}), so quick CPU settings "
        f"({demo['EPOCHS']} epochs, batch {demo['BATCH_SIZE']}, {demo['LIMIT_IDENTITIES']} "
        "people); for the assignment pick a GPU (Colab: Runtime > Change runtime type) or set "
        'PRESET = "full"'
    )
    return "demo"


PRESET_RECORD = "preset.json"
"""``DATA_DIR/preset.json``: the preset stage 01 made DATA_DIR with (:func:`record_preset`)."""


def record_preset(data_dir: str | os.PathLike, preset: str) -> Path:
    """Note in ``data_dir`` that stage 01 made it with ``preset`` (and when), so that the later
    chapters' ``PRESET = "auto"`` follows it even when the runtime type changes between them."""
    path = Path(data_dir) / PRESET_RECORD
    path.parent.mkdir(parents=True, exist_ok=True)
    record = {"preset": preset, "written": time.strftime("%Y-%m-%d %H:%M:%S")}
    path.write_text(json.dumps(record) + "\n")
    return path


def recorded_preset(
    data_dir: str | os.PathLike | None = None, on_drive: bool = False
) -> str | None:
    """The preset stage 01 recorded, with a one-line notice: in ``data_dir`` when given, else
    the latest record among the presets' own ``DATA_DIR`` (on Google Drive with ``on_drive``,
    as :func:`storage_path` puts them); None when there is none."""
    folders = [data_dir] if data_dir else [spec["DATA_DIR"] for spec in PRESETS.values()]
    found = []
    for folder in folders:
        path = Path(storage_path(str(folder), on_drive)) / PRESET_RECORD
        try:
            record = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(record, dict) and record.get("preset") in PRESETS:
            found.append((str(record.get("written", "")), record["preset"], path.parent))
    if not found:
        return None
    written, name, folder = max(found)
    print(
        f"PRESET auto -> {name}: stage 01 made {folder} with preset {name} ({written}), so this "
        f'chapter follows it whatever the runtime; set PRESET = "full" (or "demo") and run 01 '
        "again to change"
    )
    return name


def use_preset(preset: str, namespace: dict, follow_stage01: bool = True) -> str:
    """Fill a notebook's parameters left at ``None`` (``namespace``: its globals, after
    papermill's injected values) from ``preset``. ``auto`` follows the preset stage 01
    recorded (:func:`recorded_preset`; ``follow_stage01``, all chapters but 01), else the
    runtime (:func:`resolve_preset` on the notebook's ``DEVICE``). Values set in the cell or by
    papermill stay. Prints how the run differs from the assignment
    (:func:`maskdet.report.preset_statement`). Returns the preset used."""
    name = None
    if preset == "auto" and follow_stage01:
        on_drive = bool(namespace.get("IN_COLAB") and namespace.get("USE_DRIVE"))
        name = recorded_preset(namespace.get("DATA_DIR"), on_drive)
    name = name or resolve_preset(preset, namespace.get("DEVICE", "auto"))
    for key, value in PRESETS[name].items():
        if key in namespace and namespace[key] is None:
            namespace[key] = value
    print(preset_statement(name, namespace))
    return name


def notebooks(stages: str | None = None) -> list[Path]:
    """The stage notebooks present, in order (optionally only ``stages`` like '01,02'); a stage
    with no notebook is a :class:`UsageError` naming those there are."""
    found = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    if stages:
        wanted = {s.strip().zfill(2) for s in stages.split(",")}
        unknown = sorted(wanted - {p.name[:2] for p in found})
        if unknown:
            raise UsageError(
                f"--stages {stages}: no notebook for stage {', '.join(unknown)}; the stages are "
                f"{', '.join(p.name[:2] for p in found)} ({', '.join(p.stem for p in found)})"
            )
        found = [p for p in found if p.name[:2] in wanted]
    return found


class NotebookFailed(RuntimeError):
    """A notebook stopped with an error; the message is the notebook's own, in one line."""


def _execute(nb: Path, out: Path, parameters: dict) -> None:
    """Execute one notebook with papermill; its error is raised as the notebook's own words
    (:class:`NotebookFailed`), not papermill's traceback."""
    try:
        pm.execute_notebook(
            str(nb),
            str(out / nb.name),
            parameters=parameters,
            cwd=str(ROOT),
            kernel_name="python3",
            progress_bar=False,
            log_output=False,
        )
    except pm.PapermillExecutionError as err:
        said = " ".join(str(err.evalue).split()) or err.ename
        raise NotebookFailed(
            f"{nb.stem} stopped: {said} (the executed notebook, with its traceback: "
            f"{out / nb.name})"
        ) from None


def run_notebooks(
    preset: str = "demo",
    source: str | None = None,
    data_dir: str | None = None,
    out_dir: str | None = None,
    stages: str | None = None,
    extra: dict | None = None,
) -> dict:
    """Execute the notebooks in order with papermill, saving executed copies in ``out_dir``."""

    chosen = notebooks(stages)  # an unknown stage is refused before anything runs
    params = dict(RUN_PRESETS[preset], PRESET=preset)
    if source:
        params["SOURCE"] = source
    if data_dir:
        params["DATA_DIR"] = data_dir
    for k, v in (extra or {}).items():
        try:
            params[k] = json.loads(v)  # numbers, true/false, lists
        except json.JSONDecodeError:
            params[k] = v
    out = Path(out_dir or Path("runs") / preset / "notebooks")
    if not out.is_absolute():
        out = ROOT / out
    out.mkdir(parents=True, exist_ok=True)
    timings = {}
    for nb in chosen:
        t0 = time.time()
        print(f"== {nb.name}", flush=True)
        declared = pm.inspect_notebook(str(nb))  # pass each notebook only its own parameters
        _execute(nb, out, {k: v for k, v in params.items() if k in declared})
        timings[nb.name] = round(time.time() - t0, 1)
    run_dir = Path(params["RUN_DIR"])
    run_dir = run_dir if run_dir.is_absolute() else ROOT / run_dir
    numbers = headline_numbers(run_dir)
    header = preset_statement(preset, params)
    report = write_report(out, run_dir / "report.html", headline=numbers, header=header)
    return {
        "preset": preset,
        "executed": str(out),
        "report": str(report),
        "quality": numbers,
        "seconds": timings,
        "parameters": params,
    }
