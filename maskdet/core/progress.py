"""The package's one progress bar: a text bar that is cleared when done, then one final line.

``tqdm.auto`` draws a widget in a notebook, and a saved (or papermill-executed) notebook keeps the
widget's first frame: a bar frozen at 0%. :func:`bar` is a plain text bar (``tqdm.std``) in a
terminal and in a notebook alike: its frames are carriage-return updates that every notebook
viewer folds into one line, cleared when the bar closes (``leave=False``), and followed by one
line saying what was done (``crop faces: 66 done in 00:03``). In a notebook (no terminal) it is
redrawn at most once a second, so a long bar adds little to the saved notebook.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from typing import Any

from tqdm import std

NOTEBOOK_REDRAW_S = 1.0
"""Seconds between two frames of a bar written to something other than a terminal."""


class TextBar(std.tqdm):
    """A ``tqdm.std.tqdm`` cleared when closed, then (``final``) one line: done of total, time."""

    def __init__(self, *args: Any, final: bool = True, **kwargs: Any) -> None:
        kwargs.setdefault("leave", False)
        stream = kwargs.get("file") or sys.stderr
        if not getattr(stream, "isatty", lambda: False)():
            kwargs.setdefault("mininterval", NOTEBOOK_REDRAW_S)
        self.final = final
        super().__init__(*args, **kwargs)

    def final_line(self) -> str:
        """What the bar did, in one line: ``desc: n [of total] unit in mm:ss``."""
        size = self.format_sizeof if self.unit_scale else "{:,}".format
        unit = ("" if self.unit_scale else " ") + ("done" if self.unit == "it" else self.unit)
        if not self.unit_scale and self.unit.isalpha() and self.unit != "it" and self.n != 1:
            unit += "s"  # 3 images, 1 image
        done = (
            size(self.n)
            if self.total in (None, self.n)
            else f"{size(self.n)} of {size(self.total)}"
        )
        elapsed = self.format_interval(self._time() - self.start_t)
        return f"{self.desc + ': ' if self.desc else ''}{done}{unit} in {elapsed}"

    def close(self) -> None:
        shown = not self.disable  # close() runs again from __del__: one final line
        super().close()
        if shown and self.final:
            self.fp.write(self.final_line() + "\n")
            self.fp.flush()


def bar(iterable: Iterable | None = None, **kwargs: Any) -> TextBar:
    """A progress bar over ``iterable`` (or ``total=``), with tqdm's keyword arguments
    (``desc``, ``total``, ``unit``, ``disable``...) and ``final`` (default True: the closing
    line; False where the caller prints its own, like the epoch line of training)."""
    return TextBar(iterable, **kwargs)
