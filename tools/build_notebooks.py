"""Build notebooks/NN_name.ipynb from notebooks/src/NN_name.py, the single source of each chapter.

A source is a jupytext percent script (``# %%`` code cells, ``# %% [markdown]`` cells), linted and
formatted by ruff like any module: a title cell, an imports cell, the ``parameters`` cell, then
the chapter. The parameters cell is generated from :data:`maskdet.training.config.RUN_PRESETS`
(``PRESET = "auto"``, then each value that is the same in every preset, ``None`` with the
``demo`` and ``full`` values in the comment where they differ), so each value is written once.
The builder adds what every chapter shares: the Open-in-Colab badge under the title, the Setup
section (the only place that installs anything, and only on Colab; the imports cell goes there
too), the Parameters heading and the cell that fills the parameters from the preset and keeps
``*_DIR`` parameters on Google Drive. Notebooks are written without outputs.

    python tools/build_notebooks.py          # rewrite the parameters cells, write the notebooks
    python tools/build_notebooks.py --check  # CI: fail if a source or a notebook is stale
"""

from __future__ import annotations

import argparse
import ast
import re
import sys
from pathlib import Path

import jupytext
import nbformat

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # this checkout's maskdet, whatever is installed

from maskdet.training.config import notebook_params  # noqa: E402

SRC = ROOT / "notebooks" / "src"
REPO_URL = "https://github.com/maskdet/mask-detection"
"""Where the project lives on GitHub (used by the badge and by the Colab setup cell)."""
COLAB = (
    "https://colab.research.google.com/github/"
    + REPO_URL.split("github.com/")[1]
    + "/blob/main/notebooks/"
)
PARAMS_MARK = '# %% tags=["parameters"]'

SETUP_MD = """## Setup

On Colab this cell clones the project, runs `colab_setup.sh` (installs only what Colab lacks and
fetches MaskTheFace) and mounts Google Drive so that data and runs survive the session. Anywhere
else it does nothing but move to the project root: install the project once with
`pip install -r requirements.txt -e .` (see the README)."""

SETUP_CODE = f"""import os
import sys

IN_COLAB = "google.colab" in sys.modules
USE_DRIVE = True  # Colab only: keep data/ and runs/ on Google Drive
if IN_COLAB:
    if not os.path.exists("/content/mask-detection"):
        !git clone -q {REPO_URL} /content/mask-detection
    %cd /content/mask-detection
    ![ -e /content ] && bash colab_setup.sh
    if USE_DRIVE:
        from google.colab import drive

        drive.mount("/content/drive")
elif os.path.basename(os.getcwd()) == "notebooks":
    os.chdir("..")  # paths below are relative to the project root"""

PARAMS_MD = """## Parameters

`PRESET = "auto"` runs the assignment (`full`: all of LFW, 50 epochs, batch 64, lr 0.01) on a
CUDA GPU and quick `demo` settings on a CPU; a parameter left at `None` comes from the preset
(both values are in its comment), any value you set wins. `python -m maskdet run --preset
smoke|demo|full` sets these for every notebook (papermill). Chapter 01 notes its preset in
`DATA_DIR/preset.json`, and `auto` in chapters 02-06 follows it (one line says so), so changing
the runtime type between chapters keeps the data and runs of one preset."""


def storage_code(params: str, first: bool = False) -> str:
    """Fill the parameters left to ``PRESET`` (papermill's values stay; ``auto`` follows the
    preset stage 01 recorded, except in stage 01 itself, ``first``, which chooses by the
    runtime), then re-root every ``*_DIR`` parameter on Google Drive when Drive is mounted."""
    names = re.findall(r"^([A-Z_]+_DIR)\s*=", params, flags=re.M)
    lines = [
        "from maskdet.core.system import storage_path",
        "from maskdet.pipeline import use_preset",
        "",
    ]
    if first:
        lines += ["# stage 01 chooses by the runtime and records its choice for the later chapters"]
        lines += ["PRESET = use_preset(PRESET, globals(), follow_stage01=False)"]
    else:
        lines += ["PRESET = use_preset(PRESET, globals())  # fills the parameters left at None"]
    lines += [f"{n} = storage_path({n}, IN_COLAB and USE_DRIVE)" for n in names]
    return "\n".join(lines)


def with_generated_params(text: str, name: str) -> str:
    """The source text with its parameters cell written from the presets (same names)."""
    start = text.index(PARAMS_MARK) + len(PARAMS_MARK) + 1
    end = text.index("\n# %%", start)
    names = [n.targets[0].id for n in ast.parse(text[start:end]).body]
    if not names:
        raise ValueError(f"{name}: the parameters cell declares no parameters")
    return text[:start] + notebook_params(names) + "\n" + text[end:]


def build(name: str, text: str) -> nbformat.NotebookNode:
    """The notebook of one source text."""
    src = jupytext.reads(text, fmt="py:percent")
    title, imports, params, *chapter = src.cells
    if (title.cell_type, imports.cell_type) != ("markdown", "code") or "parameters" not in (
        params.metadata.get("tags", [])
    ):
        raise ValueError(f"{name}: expected a title, an imports cell and the parameters cell")
    head, _, intro = title.source.partition("\n")
    badge = (
        f"[![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)]"
        f"({COLAB}{name}.ipynb)"
    )
    cells = [
        nbformat.v4.new_markdown_cell(f"{head}\n\n{badge}\n\n{intro.strip()}"),
        nbformat.v4.new_markdown_cell(SETUP_MD),
        nbformat.v4.new_code_cell(SETUP_CODE, metadata={"tags": ["setup"]}),
        nbformat.v4.new_code_cell(imports.source, metadata={"tags": ["setup"]}),
        nbformat.v4.new_markdown_cell(PARAMS_MD),
        nbformat.v4.new_code_cell(params.source, metadata={"tags": ["parameters"]}),
        nbformat.v4.new_code_cell(storage_code(params.source, first=name.startswith("01"))),
    ]
    for cell in chapter:
        make = (
            nbformat.v4.new_markdown_cell
            if cell.cell_type == "markdown"
            else nbformat.v4.new_code_cell
        )
        cells.append(make(cell.source))
    nb = nbformat.v4.new_notebook(cells=cells)
    nb.metadata = {
        "kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
        "language_info": {"name": "python"},
        "accelerator": "GPU",
        "colab": {"provenance": [], "toc_visible": True},
    }
    for i, cell in enumerate(nb.cells):  # stable ids keep diffs small
        cell["id"] = f"{name[:2]}-{i:02d}"
    return nb


def stale(write: bool = False) -> list[str]:
    """Sources whose parameters cell and notebooks that differ from what they are built to be
    (written instead when ``write``)."""
    out = []
    for src in sorted(SRC.glob("[0-9][0-9]_*.py")):
        text = src.read_text()
        fresh = with_generated_params(text, src.stem)
        if fresh != text:
            out.append(str(src.relative_to(ROOT)))
            if write:
                src.write_text(fresh)
        nb_path = ROOT / "notebooks" / f"{src.stem}.ipynb"
        built = nbformat.writes(build(src.stem, fresh)) + "\n"
        if not nb_path.exists() or nb_path.read_text() != built:
            out.append(str(nb_path.relative_to(ROOT)))
            if write:
                nb_path.write_text(built)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true")
    args = ap.parse_args(argv)
    changed = stale(write=not args.check)
    if args.check and changed:
        print("stale (run python tools/build_notebooks.py):", ", ".join(changed))
        return 1
    for path in changed:
        print("wrote", path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
