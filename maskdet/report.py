"""One HTML report from the executed notebooks (``run`` writes it into the run folder).

The notebooks are the report: each carries its chapter (data, masks, loader, ResNet-50, ROC per
epoch, test results, ablations, real photos, limitations). :func:`write_report` joins the executed
copies, in stage order, into a single self-contained HTML file (figures embedded), with a table of
contents and the input code folded away, so it reads like a document and opens anywhere.
"""

from __future__ import annotations

import html
import json
import os
import re
from pathlib import Path

import nbformat
from nbconvert import HTMLExporter
from nbconvert.preprocessors import CoalesceStreamsPreprocessor

from .core.constants import ROOT
from .core.manifest import STAGE01_RECORD, STAGE02_SUMMARY
from .synthesis.renderers import resolve_backend
from .synthesis.synthesis import synthesizer
from .training.config import RUN_PRESETS

ASSIGNMENT = RUN_PRESETS["full"]
"""The assignment's settings: 50 epochs, batch 64, lr 0.01, all of LFW, ImageNet weights."""
LFW_PEOPLE = 5749
"""People in LFW (what ``LIMIT_IDENTITIES = 0`` keeps)."""


def _title(nb: nbformat.NotebookNode, fallback: str) -> str:
    for c in nb.cells:
        if c.cell_type == "markdown":
            m = re.search(r"^#\s+(.+)$", c.source, flags=re.MULTILINE)
            if m:
                return m.group(1).strip()
    return fallback


def _record(folder: str | os.PathLike | None, name: str) -> dict:
    """A stage's JSON record in ``folder`` (relative: to the project root), or {} when absent."""
    if not folder or str(folder) == "auto":
        return {}
    path = Path(folder)
    path = (path if path.is_absolute() else ROOT / path) / name
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def _synthesizer_now(backend: str | None) -> str:
    """Who stage 02 would draw the masks with here (before it has run)."""
    try:
        return synthesizer(*resolve_backend(backend or None, verbose=False))
    except (FileNotFoundError, ValueError) as err:
        return f"{backend} (asked for, not usable: {err})"


def preset_statement(preset: str, params: dict) -> str:
    """One line: the preset and how its run differs from the assignment (epochs, batch, lr,
    people, ImageNet weights, synthesizer). ``params``: the notebook parameters (a notebook's
    globals, or ``run``'s); those not given come from the preset. People, ImageNet weights and
    the synthesizer are what the run's records say (``DATA_DIR/stage01.json``,
    ``DATA_DIR/stage02.json``, ``RUN_DIR/summary.json``) once the stage has run, else what the
    parameters ask for."""
    p = dict(RUN_PRESETS.get(preset, ASSIGNMENT))
    p.update({k: v for k, v in params.items() if k in p and v is not None})
    people = _record(p["DATA_DIR"], STAGE01_RECORD).get("result", {}).get("identities_used")
    people = people or p["LIMIT_IDENTITIES"] or LFW_PEOPLE
    imagenet = _record(p["RUN_DIR"], "summary.json").get("imagenet_weights")
    weights = (
        "random initialisation"
        if imagenet is False or not p["PRETRAINED"]
        else "ImageNet weights"
        + ("" if imagenet else " (loaded in stage 04 when they can be downloaded)")
    )
    masks = _record(p["DATA_DIR"], STAGE02_SUMMARY).get("synthesizer")
    masks = masks or _synthesizer_now(p["SYNTH_BACKEND"]) + " (the choice of stage 02 here)"
    epochs = f"{p['EPOCHS']} epoch" + "s" * (p["EPOCHS"] != 1)
    items = [  # (what this run has, what the assignment asks, or None where they agree)
        (epochs, ASSIGNMENT["EPOCHS"], p["EPOCHS"]),
        (f"batch {p['BATCH_SIZE']}", ASSIGNMENT["BATCH_SIZE"], p["BATCH_SIZE"]),
        (f"lr {p['LR']}", ASSIGNMENT["LR"], p["LR"]),
        (f"{people:,} people" if people < LFW_PEOPLE else f"all {LFW_PEOPLE:,} people", "all", None)
        if people >= LFW_PEOPLE
        else (f"{people:,} people", f"all {LFW_PEOPLE:,}", people),
        (f"at most {p['LIMIT']:,} images per split", "all", p["LIMIT"] or None),
        (weights, "ImageNet weights", None if weights.startswith("ImageNet") else weights),
        (f"masks by {masks}", "MaskTheFace", None if masks.startswith("MaskTheFace") else masks),
    ]
    differ = [f"{have} instead of {want}" for have, want, got in items if got not in (None, want)]
    same = [
        have for have, want, got in items if got in (None, want) and not have.startswith("at most")
    ]
    if not differ:
        return f"Preset {preset}: the assignment's settings ({', '.join(same)})."
    return f"Preset {preset}, unlike the assignment: {', '.join(differ)}" + (
        f"; as assigned: {', '.join(same)}." if same else "."
    )


def headline_numbers(run_dir: str | os.PathLike) -> dict[str, str]:
    """The run's quality in two lines: synthetic test AUC beside real AUC (with recall and
    specificity at the val threshold), read from ``eval_test.json`` and ``eval_real.json``."""
    out = {}
    for name, label in (("eval_test.json", "synthetic test"), ("eval_real.json", "real faces")):
        path = Path(run_dir) / name
        if path.exists():
            r = json.loads(path.read_text())
            a, m = r["auc"], r["at_threshold"]
            out[label] = (
                f"AUC {a['auc']:.4f} [{a['low']:.4f}, {a['high']:.4f}], recall {m['recall']:.3f}, "
                f"specificity {m['specificity']:.3f} at the val threshold {m['threshold']:.3f} "
                f"(n = {r['n']})"
            )
    if "real faces" not in out and out:
        out["real faces"] = "not measured (no real set): synthetic numbers alone say little"
    return out


def _gif_as_html(cell: nbformat.NotebookNode) -> None:
    """Give each GIF output of ``cell`` an HTML ``<img>`` in its place: nbconvert writes only the
    text fallback of an ``image/gif`` output (``<IPython.core.display.Image object>``)."""
    for out in cell.get("outputs", []):
        gif = out.get("data", {}).get("image/gif")
        if gif:
            b64 = gif if isinstance(gif, str) else "".join(gif)
            out["data"] = {
                "text/html": f'<img alt="animation" src="data:image/gif;base64,{b64.strip()}">'
            }


def write_report(
    executed_dir: str | os.PathLike,
    out_html: str | os.PathLike,
    title: str = "Mask detection: report",
    show_code: bool = False,
    headline: dict[str, str] | None = None,
    header: str = "",
) -> Path:
    """Join ``executed_dir/NN_*.ipynb`` into ``out_html``; returns its path.

    ``header``: a line under the title (the preset against the assignment:
    :func:`preset_statement`). Setup and parameters cells are left out; code is hidden unless
    ``show_code``; an animated GIF is shown as one. A notebook that
    failed keeps its error output, so a broken stage is visible in the report.
    """
    executed = sorted(Path(executed_dir).glob("[0-9][0-9]_*.ipynb"))
    if not executed:
        raise FileNotFoundError(
            f"no executed notebooks in {executed_dir}: run `python -m maskdet run` first"
        )
    merged = nbformat.v4.new_notebook()
    merged.metadata = nbformat.read(executed[0], as_version=4).metadata
    toc = []
    for i, path in enumerate(executed):
        nb = nbformat.read(path, as_version=4)
        name = _title(nb, path.stem)
        anchor = f"chapter-{i + 1}"
        toc.append(f'<li><a href="#{anchor}">{html.escape(name)}</a></li>')
        merged.cells.append(nbformat.v4.new_markdown_cell(f'<a id="{anchor}"></a>\n\n---'))
        for c in nb.cells:
            tags = set(c.metadata.get("tags", []))
            if tags & {"parameters", "injected-parameters", "setup"}:
                continue
            if c.cell_type == "code" and c.source.lstrip().startswith(
                ("import os\nimport sys", "# Setup")
            ):
                continue
            if c.cell_type == "markdown" and c.source.lstrip().startswith("## Setup"):
                continue
            if c.cell_type == "markdown" and "colab-badge.svg" in c.source:
                c = nbformat.v4.new_markdown_cell(
                    re.sub(r"\[!\[Open In Colab\].*?\)\]\(.*?\)", "", c.source)
                )
            _gif_as_html(c)
            merged.cells.append(c)
    exporter = HTMLExporter(template_name="lab")
    # a text bar's frames are "\r" redraws: folded into what a notebook viewer shows
    exporter.register_preprocessor(CoalesceStreamsPreprocessor(), enabled=True)
    exporter.exclude_input = not show_code
    exporter.exclude_input_prompt = True
    exporter.exclude_output_prompt = True
    body, _ = exporter.from_notebook_node(merged)
    numbers = "".join(
        f"<li><b>{html.escape(k)}</b>: {html.escape(v)}</li>" for k, v in (headline or {}).items()
    )
    nav = (
        f'<nav style="padding:1em 2em"><h1>{html.escape(title)}</h1>'
        + (f'<p class="preset">{html.escape(header)}</p>' if header else "")
        + (f"<ul>{numbers}</ul>" if numbers else "")
        + f"<ol>{''.join(toc)}</ol></nav>"
    )
    body = re.sub(r"(<body[^>]*>)", r"\1" + nav.replace("\\", "\\\\"), body, count=1)
    out = Path(out_html)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(body, encoding="utf-8")
    return out
