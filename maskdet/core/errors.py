"""The errors a user meets, and how ``python -m maskdet`` prints them.

A failure reaches the user as one line that names the file or option and the fix; the traceback
appears only with ``--debug``. :class:`UsageError` is a bad option value or combination found
after parsing (a negative count, overlapping folders): it exits 2 like argparse's own errors,
every other failure exits 1.
"""

from __future__ import annotations

import sys


class UsageError(ValueError):
    """An option value or combination that cannot work; the command line exits 2."""


def one_line(err: BaseException) -> str:
    """``err`` as one line: the file and reason of an ``OSError``, the message of the project's
    own errors, the type and message of anything else."""
    if isinstance(err, OSError) and err.filename is not None:
        text = f"{err.filename}: {err.strerror or err}"
    else:
        text = str(err).strip()
        if isinstance(err, KeyError) and text.startswith("'"):
            text = f"missing key {text}"
        if not isinstance(err, (ValueError, RuntimeError, OSError, LookupError)) or not text:
            text = f"{type(err).__name__}: {text}" if text else type(err).__name__
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return " ".join(lines)[:600]


def escape_unwritable() -> None:
    """Let stdout and stderr write any text: what their encoding cannot take (a file name that is
    not UTF-8, an accent in an ASCII locale) is written as ``\\xNN`` escapes, never an error."""
    for stream in (sys.stdout, sys.stderr):
        if getattr(stream, "errors", "") == "strict" and hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="backslashreplace")
