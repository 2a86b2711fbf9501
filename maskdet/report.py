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


def _title(nb: nbformat.NotebookNode, fallback: str) -> str:
    for c in nb.cells:
        if c.cell_type == "markdown":
            m = re.search(r"^#\s+(.+)$", c.source, flags=re.MULTILINE)
            if m:
                return m.group(1).strip()
    return fallback


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


def write_report(
    executed_dir: str | os.PathLike,
    out_html: str | os.PathLike,
    title: str = "Mask detection: report",
    show_code: bool = False,
    headline: dict[str, str] | None = None,
) -> Path:
    """Join ``executed_dir/NN_*.ipynb`` into ``out_html``; returns its path.

    Setup and parameters cells are left out; code is hidden unless ``show_code``. A notebook that
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
            merged.cells.append(c)
    exporter = HTMLExporter(template_name="lab")
    exporter.exclude_input = not show_code
    exporter.exclude_input_prompt = True
    exporter.exclude_output_prompt = True
    body, _ = exporter.from_notebook_node(merged)
    numbers = "".join(
        f"<li><b>{html.escape(k)}</b>: {html.escape(v)}</li>" for k, v in (headline or {}).items()
    )
    nav = (
        f'<nav style="padding:1em 2em"><h1>{html.escape(title)}</h1>'
        + (f"<ul>{numbers}</ul>" if numbers else "")
        + f"<ol>{''.join(toc)}</ol></nav>"
    )
    body = re.sub(r"(<body[^>]*>)", r"\1" + nav.replace("\\", "\\\\"), body, count=1)
    out = Path(out_html)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(body, encoding="utf-8")
    return out
