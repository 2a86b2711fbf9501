"""The report's header and each notebook's parameters output: the preset against the assignment
(epochs, batch, lr, people, ImageNet weights, synthesizer), from the run's own records; the kiosk
GIF shown in report.html, a text bar's frames folded to its final line (issue 17, parts 3
and 6)."""

from __future__ import annotations

import base64
import io
import json
import re

import nbformat
import numpy as np
from PIL import Image

from maskdet.core.manifest import STAGE01_RECORD, STAGE02_SUMMARY
from maskdet.pipeline import use_preset
from maskdet.report import preset_statement, write_report


def _records(tmp_path, people: int, synthesizer: str, imagenet: bool) -> dict:
    data, run = tmp_path / "data", tmp_path / "run"
    data.mkdir()
    run.mkdir()
    (data / STAGE01_RECORD).write_text(json.dumps({"result": {"identities_used": people}}))
    (data / STAGE02_SUMMARY).write_text(json.dumps({"synthesizer": synthesizer}))
    (run / "summary.json").write_text(json.dumps({"imagenet_weights": imagenet}))
    return {"DATA_DIR": str(data), "RUN_DIR": str(run)}


def test_smoke_names_every_difference_from_the_records(tmp_path):
    dirs = _records(tmp_path, 30, "the builtin renderer", False)
    line = preset_statement("smoke", dirs)
    assert line.startswith("Preset smoke, unlike the assignment: 1 epoch instead of 50, batch 4")
    for part in (
        "batch 4 instead of 64",
        "30 people instead of all 5,749",
        "at most 8 images per split instead of all",
        "random initialisation instead of ImageNet weights",
        "masks by the builtin renderer instead of MaskTheFace",
        "as assigned: lr 0.01",
    ):
        assert part in line, part
    assert "\n" not in line


def test_full_with_its_records_is_the_assignment(tmp_path):
    dirs = _records(tmp_path, 5749, "MaskTheFace at commit caf4d6c", True)
    line = preset_statement("full", dirs)
    assert line.startswith("Preset full: the assignment's settings (50 epochs, batch 64, lr 0.01")
    assert "ImageNet weights" in line and "MaskTheFace at commit caf4d6c" in line
    assert "instead" not in line
    # weights that could not be loaded are a difference, whatever PRETRAINED asked for
    (tmp_path / "run" / "summary.json").write_text(json.dumps({"imagenet_weights": False}))
    assert "random initialisation instead of ImageNet weights" in preset_statement("full", dirs)


def test_values_set_in_a_notebook_win_over_the_preset(tmp_path, capsys):
    ns = {"EPOCHS": 20, "BATCH_SIZE": None, "LR": 0.01, "DEVICE": "cpu"}
    ns |= _records(tmp_path, 1500, "the builtin renderer", True)
    assert use_preset("demo", ns) == "demo"
    printed = capsys.readouterr().out.strip().splitlines()
    assert printed == [preset_statement("demo", ns)]  # the parameters cell's one line
    assert "20 epochs instead of 50, batch 32 instead of 64" in printed[0]


def _gif() -> str:
    frames = [Image.fromarray(np.full((8, 8, 3), v, np.uint8)) for v in (0, 255)]
    buf = io.BytesIO()
    frames[0].save(buf, format="GIF", save_all=True, append_images=frames[1:], duration=100)
    return base64.b64encode(buf.getvalue()).decode()


def _bar_frames() -> list:
    """The stream outputs that a text bar (maskdet.core.progress) leaves in an executed notebook."""
    from maskdet.core.progress import bar

    class Frames(list):
        def write(self, text: str) -> None:
            self.append(nbformat.v4.new_output("stream", name="stderr", text=text))

        def flush(self) -> None:
            pass

    frames = Frames()
    for _ in bar(range(3), desc="crop faces", file=frames, mininterval=0):
        pass
    assert len(frames) > 3  # redraws, the clearing, the final line
    return frames


def test_report_has_the_header_and_shows_the_gif(tmp_path):
    gif = _gif()
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_markdown_cell("# 06 · Photos"),
        nbformat.v4.new_code_cell("run()", outputs=_bar_frames()),
        nbformat.v4.new_code_cell(
            "display(clip)",
            outputs=[
                nbformat.v4.new_output(
                    "display_data",
                    data={"image/gif": gif, "text/plain": "<IPython.core.display.Image object>"},
                )
            ],
        ),
    ]
    nbformat.write(nb, tmp_path / "06_photos.ipynb")
    header = preset_statement("smoke", {})
    text = write_report(tmp_path, tmp_path / "report.html", header=header).read_text()
    assert "Preset smoke, unlike the assignment" in text
    assert text.index("Preset smoke") < text.index("06 · Photos")
    assert f'src="data:image/gif;base64,{gif}"' in text
    assert "IPython.core.display.Image object" not in text
    assert "0%|" not in text and re.search(r"crop faces: 3 done in \d\d:\d\d\n", text)  # folded
