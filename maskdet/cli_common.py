"""What the subcommands of ``python -m maskdet`` share: how a result is printed, and the
argparse value types of their options."""

from __future__ import annotations

import argparse
import json

from .core.errors import UsageError
from .synthesis.shards import Shard


def print_json(result: object) -> None:
    """``result`` as indented JSON on stdout (what every subcommand prints)."""
    print(json.dumps(result, indent=2, default=str))


def shard_type(text: str) -> Shard:
    """``--shard K/N`` as a :class:`~maskdet.synthesis.shards.Shard` (argparse's error otherwise)."""
    try:
        return Shard.parse(text)
    except UsageError as err:
        raise argparse.ArgumentTypeError(str(err).removeprefix("--shard takes ")) from None


def name_value(text: str) -> tuple[str, str]:
    """``--param NAME=VALUE`` as (NAME, VALUE)."""
    name, eq, value = text.partition("=")
    if not eq or not name.strip():
        raise UsageError(f"--param takes NAME=VALUE (e.g. --param EPOCHS=2), got {text!r}")
    return name.strip(), value
