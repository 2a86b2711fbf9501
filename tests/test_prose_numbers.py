"""Numbers in the chapters' prose are true: a measured figure in a markdown cell carries its
provenance, or it is not in the markdown at all (a code cell prints it from the run).

The convention (also in the README, "Numbers in the notebooks"):

- A **measured figure** is a number that a run produced: a percentage (``73%``), a ratio
  (``10.7x``), a score with two or more decimals (``0.962``), a speed, size or duration
  (``25 images/s``, ``3.2 ms``, ``1.3 GB``, ``12 min``), a count of the form ``35 of 50``, or
  any number in the body of a table whose header names a measured quantity (AUC, recall,
  frames/s, ms, boxes, ...).
- A measured figure about **this run** is never written in markdown: a code cell prints it (or
  writes it into a Markdown output) from the run's results.
- A figure **measured elsewhere** sits in a paragraph that carries the tag
  ``(measured YYYY-MM-DD, MACHINE, `COMMAND`)``; a table is covered by the tag in the paragraph
  just before it (its caption).
- **Settings** are not measurements: sizes such as 112x112, epochs, batch, learning rate,
  framings and other constants of the assignment or the design. Those that look like a measured
  figure are listed, each with its reason, in :data:`SETTINGS`.

The check reads only the markdown cells of ``notebooks/src/*.py``; inline code (commands,
options) is not prose and is left out.
"""

from __future__ import annotations

import datetime
import re
from pathlib import Path

import jupytext
import pytest

SRC = Path(__file__).resolve().parents[1] / "notebooks" / "src"

SETTINGS: dict[str, str] = {
    "64%": "stage 01 keeps the central 64% of the aligned image (the framing)",
    "55-100%": "the random resized crop's area range (augmentation setting)",
    "95%": "the confidence level of the bootstrap interval",
    "1%": "an operating point: TPR at 1% FPR",
    "5%": "an operating point: TPR at 5% FPR",
    "0.01": "the assignment's learning rate",
    "0.001": "the learning rate of the lr ablation",
    "1.0x": "a real-crop framing (1.0x the face box)",
    "1.25x": "a real-crop framing",
    "1.5x": "realdev's own framing (1.5x the face box)",
    "2.0x": "a real-crop framing (loose)",
    "4x": "a bottleneck block's expansion (ResNet-50's design)",
    "160 of 250": "stage 01's crop: 160 of the aligned image's 250 px",
}
"""Constants of the assignment or the design that look like measured figures, with why."""

_NUM = r"\d[\d,]*(?:\.\d+)?"
_RANGE = rf"{_NUM}(?:\s?-\s?{_NUM})?"
UNITS = (
    r"images/s|img/s|frames/s|faces/s|it/s|s/step|ms|GB|MB|KB|GFLOP/s|GFLOP|min|minutes|"
    r"seconds|s per \w+|h"
)
MEASURED = [
    ("percentage", re.compile(rf"(?<![\w.]){_RANGE}\s?%")),
    ("ratio", re.compile(rf"(?<![\w.]){_RANGE}x(?![\w])")),
    ("score", re.compile(r"(?<![\w.,])[01]\.\d{2,}(?:\s?-\s?[01]\.\d{2,})?(?![\dx])")),
    ("speed, size or time", re.compile(rf"(?<![\w.]){_RANGE}\s?(?:{UNITS})(?![\w])")),
    ("count", re.compile(rf"(?<![\w.]){_NUM} of (?:the )?{_NUM}(?![\w])")),
]
MEASURED_HEADER = re.compile(
    r"AUC|recall|specificity|accuracy|frames/s|faces/s|images/s|\bms\b|boxes|agree", re.I
)
TAG = re.compile(r"\(measured\s+(\d{4}-\d{2}-\d{2}),\s+([^,`()]+?),\s+(`[^`]+`(?:[^()`]*`[^`]+`)*)")
INLINE_CODE = re.compile(r"`[^`]*`")
LINK_TARGET = re.compile(r"\]\([^)]*\)")


def markdown_cells(path: Path) -> list[str]:
    """The markdown cells of one chapter source (a jupytext percent script)."""
    nb = jupytext.reads(path.read_text(encoding="utf-8"), fmt="py:percent")
    return [c.source for c in nb.cells if c.cell_type == "markdown"]


def paragraphs(cell: str) -> list[str]:
    """A cell's paragraphs (blank-line separated; a table is one paragraph)."""
    return [p.strip() for p in re.split(r"\n\s*\n", cell) if p.strip()]


def tagged(paragraph: str) -> bool:
    """True when ``paragraph`` carries a provenance tag with a real date."""
    m = TAG.search(paragraph)
    if not m:
        return False
    try:
        datetime.date.fromisoformat(m.group(1))
    except ValueError:
        return False
    return True


def measured_figures(paragraph: str) -> list[str]:
    """The measured figures of a paragraph (see the module docstring), settings left out."""
    text = LINK_TARGET.sub("]", INLINE_CODE.sub(" ", paragraph))
    found = []
    lines = text.splitlines()
    if lines and lines[0].lstrip().startswith("|"):
        if MEASURED_HEADER.search(lines[0]):
            for row in lines[2:]:
                found += [n for n in re.findall(_NUM, row) if n.strip(",")]
        text = "\n".join(lines[:2])
    for _kind, pattern in MEASURED:
        found += [m.group(0) for m in pattern.finditer(text)]
    found = [" ".join(f.split()) for f in found]
    return [f for f in found if f not in SETTINGS]


def unsourced(cell: str) -> list[tuple[str, str]]:
    """(figure, the paragraph's start) for each measured figure without provenance."""
    out = []
    paras = paragraphs(cell)
    for i, p in enumerate(paras):
        caption = paras[i - 1] if i and p.startswith("|") else ""
        if tagged(p) or (caption and tagged(caption)):
            continue
        out += [(f, p[:60].replace("\n", " ")) for f in measured_figures(p)]
    return out


def offenders(paths: list[Path]) -> list[str]:
    return [
        f"{path.name}: {fig!r} in {start!r}..."
        for path in paths
        for cell in markdown_cells(path)
        for fig, start in unsourced(cell)
    ]


CHAPTERS = sorted(SRC.glob("[0-9][0-9]_*.py"))


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.stem)
def test_measured_figures_in_markdown_carry_date_machine_and_command(path: Path):
    bad = offenders([path])
    assert not bad, (
        "measured figures in markdown without '(measured YYYY-MM-DD, MACHINE, `COMMAND`)' in "
        "their paragraph: print them from the run in a code cell, or add the provenance:\n"
        + "\n".join(bad)
    )


@pytest.mark.parametrize(
    "text",
    [
        "The cached path was 10.0-10.7x faster.",
        "the CPU demo model agreed on 73% of the masked faces",
        "real AUC 0.962 on all crops",
        "about 4,850 images/s against 510",
        "int8 ONNX 12 ms per face",
        "it calls 35 of 50 faces masked",
        "| detector | boxes on masked photos |\n| --- | --- |\n| YuNet | 50 |",
        "The cache takes 1.3 GB (measured 2026-13-40, 2-core CPU, `bench loader`).",
        "Faster: 10x (measured 2026-11-26, 2-core CPU).",  # no command
    ],
)
def test_a_measured_figure_without_provenance_is_caught(text: str):
    assert unsourced(text)


@pytest.mark.parametrize(
    "text",
    [
        "Batches of 64 normalised 112x112 RGB tensors, 50 epochs, learning rate 0.01.",
        "ResNet-50 stacks 16 bottleneck blocks (4x wider); 68 landmarks; chapter 05.",
        "the central 64% of the aligned image (160 of 250 px), 80/10/10 of the people",
        "the 95% interval from 1,000 resamples; TPR at 1% and 5% FPR",
        "Run `python -m maskdet train --epochs 50 --lr 0.01` (inline code is not prose).",
        "It gave 10.0-10.7x (measured 2026-11-26, 2-core AMD EPYC CPU, "
        "`python -m maskdet bench loader`).",
        "Measured (measured 2026-12-02, 2-core AMD EPYC CPU, `python -m maskdet bench kiosk`):"
        "\n\n| setting | frames/s |\n| --- | --- |\n| int8 | 22.5 |",
        "It gave 46.1 frames/s (measured\n2026-12-02, 2-core AMD EPYC CPU, `python -m maskdet"
        "\nbench kiosk`) across a line break.",
        "| augmentation | why |\n| --- | --- |\n| rotation up to 10 degrees, JPEG 30-90 | pose |",
    ],
)
def test_settings_and_sourced_figures_pass(text: str):
    assert unsourced(text) == []
