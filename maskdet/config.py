"""Command-line options derived from what they configure: a dataclass's fields or a function's
keyword parameters give each option its name, type, default, help and choices, so that every
value is written once (in the dataclass or the signature) and the command line cannot drift."""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import types
import typing
from collections.abc import Callable
from dataclasses import field
from typing import Any


def opt(default: Any, help: str = "", choices: tuple | None = None) -> Any:
    """A dataclass field with the help text and choices of its command-line option."""
    return field(default=default, metadata={"help": help, "choices": choices})


def _plain_type(hint: Any) -> tuple[type, bool]:
    """(the option's type, whether None is allowed) for a type hint such as ``int | None``."""
    args = typing.get_args(hint)
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        kinds = [a for a in args if a is not type(None)]
        return (kinds[0] if kinds[0] in (bool, int, float) else str), type(None) in args
    return (hint if hint in (bool, int, float) else str), False


def parameters(target: type | Callable) -> list[tuple[str, type, Any, dict]]:
    """(name, type, default, metadata) of a dataclass's fields or a function's keyword
    parameters (metadata: the fields' ``opt`` help and choices; empty for functions)."""
    hints = typing.get_type_hints(target)
    if dataclasses.is_dataclass(target):
        return [
            (f.name, _plain_type(hints[f.name])[0], f.default, dict(f.metadata))
            for f in dataclasses.fields(target)
        ]
    sig = inspect.signature(target)
    return [
        (name, _plain_type(hints[name])[0], p.default, {})
        for name, p in sig.parameters.items()
        if p.default is not inspect.Parameter.empty
    ]


def add_options(
    parser: argparse.ArgumentParser,
    target: type | Callable,
    help: dict[str, str] | None = None,
    choices: dict[str, tuple] | None = None,
    skip: tuple[str, ...] = (),
) -> None:
    """One ``--option`` per field or keyword parameter of ``target`` (``snake_case`` ->
    ``--kebab-case``); booleans get ``--x/--no-x``. ``help``/``choices`` add to the fields' own."""
    for name, kind, default, meta in parameters(target):
        if name in skip:
            continue
        text = (help or {}).get(name) or meta.get("help") or None
        allowed = (choices or {}).get(name) or meta.get("choices")
        flag = "--" + name.replace("_", "-")
        if kind is bool:
            parser.add_argument(
                flag, action=argparse.BooleanOptionalAction, default=default, help=text
            )
        else:
            parser.add_argument(
                flag,
                type=kind,
                default=default,
                help=text,
                choices=list(allowed) if allowed else None,
            )


def options_of(target: type | Callable, namespace: argparse.Namespace) -> dict[str, Any]:
    """The parsed values of ``target``'s options, as keyword arguments for it."""
    names = {name for name, *_ in parameters(target)}
    return {k: v for k, v in vars(namespace).items() if k in names}
