"""Build notebooks/NN_name.ipynb from notebooks/src/NN_name.py (the single source of each chapter).

Each source module defines TITLE, INTRO (markdown), PARAMS (the papermill parameters cell) and
CELLS, a list of ("md" | "code", text). This builder adds what every chapter shares: the title,
the Open-in-Colab badge, the Setup section (the only place that installs anything, and only on
Colab) and the tagged parameters cell. Notebooks are written without outputs.

    python tools/build_notebooks.py          # write the notebooks
    python tools/build_notebooks.py --check  # CI: fail if a notebook is stale or has outputs
"""

from __future__ import annotations

import argparse
import importlib.util
import re
import sys
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "notebooks" / "src"
REPO_URL = "https://github.com/maskdet/mask-detection"
"""Where the project lives on GitHub (used by the badge and by the Colab setup cell)."""
COLAB = (
    "https://colab.research.google.com/github/"
    + REPO_URL.split("github.com/")[1]
    + "/blob/main/notebooks/"
)

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

Quick settings keep the example fast; the full settings are in the comments. `python -m maskdet
run --preset smoke|demo|full` sets these for every notebook (papermill)."""


def storage_code(params: str) -> str:
    """Re-root every ``*_DIR`` parameter on Google Drive when Drive is mounted (Colab)."""
    names = re.findall(r"^([A-Z_]+_DIR)\s*=", params, flags=re.M)
    lines = ["from maskdet.pipeline import storage_path", ""]
    lines += [f"{n} = storage_path({n}, IN_COLAB and USE_DRIVE)" for n in names]
    return "\n".join(lines)


def _load(path: Path):
    spec = importlib.util.spec_from_file_location(path.stem, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def build(path: Path) -> nbformat.NotebookNode:
    """The notebook for one source module."""
    mod = _load(path)
    name = path.stem
    badge = (
        f"[![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)]"
        f"({COLAB}{name}.ipynb)"
    )
    cells = [
        nbformat.v4.new_markdown_cell(f"# {mod.TITLE}\n\n{badge}\n\n{mod.INTRO.strip()}"),
        nbformat.v4.new_markdown_cell(SETUP_MD),
        nbformat.v4.new_code_cell(SETUP_CODE),
        nbformat.v4.new_markdown_cell(PARAMS_MD),
        nbformat.v4.new_code_cell(mod.PARAMS.strip(), metadata={"tags": ["parameters"]}),
        nbformat.v4.new_code_cell(storage_code(mod.PARAMS)),
    ]
    for kind, text in mod.CELLS:
        text = text.strip("\n")
        cells.append(
            nbformat.v4.new_markdown_cell(text) if kind == "md" else nbformat.v4.new_code_cell(text)
        )
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


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true")
    args = ap.parse_args(argv)
    stale = []
    for src in sorted(SRC.glob("[0-9][0-9]_*.py")):
        out = ROOT / "notebooks" / f"{src.stem}.ipynb"
        text = nbformat.writes(build(src)) + "\n"
        if args.check:
            if not out.exists() or out.read_text() != text:
                stale.append(out.name)
        else:
            out.write_text(text)
            print("wrote", out.relative_to(ROOT))
    if stale:
        print("stale notebooks (run python tools/build_notebooks.py):", ", ".join(stale))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
