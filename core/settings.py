"""Settings as a frozen dataclass whose fields are the command's flags, each falling back to
a MASKFARM_* variable: the one settings pattern of the server and the worker.

A field declared with ``setting(default, help)`` becomes ``--field-name`` (``result_ttl``
-> ``--result-ttl``), defaulting to ``MASKFARM_RESULT_TTL`` and then to ``default``:

- str, int, float: one value. Numbers are parsed only when the flag's own command runs
  (argparse converts a string default late), so a bad variable is that command's usage
  error naming the flag and the variable, never another command's crash;
- bool: a switch (``store_true``), on by default when the variable is ``1``;
- ``kind=int`` with ``default=None``: an optional number (None: decided later);
- a tuple: a repeatable flag named by ``flag`` (``storage_roots`` -> ``--storage-root``),
  whose variable may hold several values separated by the path separator or commas;
- ``parse``: a converter of its own (an octal file mode), ``shown``: its default as the help
  shows it, ``choices``: the allowed values, ``env``: a variable of another name.

Standard library only, so building a command line costs nothing.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
from collections.abc import Callable, Collection, Sequence
from typing import Any, TypeVar

T = TypeVar("T")
S = TypeVar("S")


def setting(
    default: T,
    help: str,
    *,
    flag: str = "",
    env: str = "",
    kind: type | None = None,
    parse: Callable[[str], Any] | None = None,
    choices: Sequence[str] | None = None,
    metavar: str | None = None,
    shown: str = "",
) -> T:
    """A settings field (see the module docstring). ``help`` is the flag's help, without
    its default, which is added (as ``shown``, when given)."""
    metadata = {"help": help, "flag": flag, "env": env, "kind": kind, "parse": parse, "choices": choices}
    metadata.update(metavar=metavar, shown=shown)
    return dataclasses.field(default=default, metadata=metadata)


def env_name(name: str) -> str:
    """The environment variable of a setting: ``result_ttl`` -> ``MASKFARM_RESULT_TTL``."""
    return "MASKFARM_" + name.upper()


def variable_of(setting: dataclasses.Field) -> str:
    return setting.metadata.get("env") or env_name(setting.name)


def add_arguments(settings: type, parser: argparse.ArgumentParser, names: Collection[str] | None = None) -> None:
    """One flag per field of the dataclass ``settings`` (only ``names``, when given)."""
    for field in dataclasses.fields(settings):
        if "help" in field.metadata and (names is None or field.name in names):
            _add_argument(parser, field)


def from_args(settings: type[S], args: argparse.Namespace, **values: Any) -> S:
    """The settings of parsed flags (plus ``values``); a repeatable flag never given takes its
    variable. Raises ``ValueError`` when the settings refuse the values."""
    for field in dataclasses.fields(settings):  # type: ignore[arg-type]
        if "help" not in field.metadata or field.name in values or not hasattr(args, field.name):
            continue
        value = getattr(args, field.name)
        if isinstance(field.default, tuple) and value is None:
            value = _values(os.environ.get(variable_of(field), "")) or field.default
        elif isinstance(field.default, tuple):
            value = tuple(value)
        values[field.name] = value
    return settings(**values)


def _add_argument(parser: argparse.ArgumentParser, field: dataclasses.Field) -> None:
    meta, variable, default = field.metadata, variable_of(field), field.default
    help = meta["help"]
    if isinstance(default, tuple):
        parser.add_argument(
            meta["flag"],
            dest=field.name,
            action="append",
            metavar=meta["metavar"] or "DIR",
            help=f"{help} (default: ${variable}, separated by {os.pathsep!r} or commas, or none)",
        )
        return
    if isinstance(default, bool):
        on = os.environ.get(variable, "") == "1"
        parser.add_argument(
            _flag(field), dest=field.name, action="store_true", default=on, help=f"{help} (env {variable}=1)"
        )
        return
    raw = os.environ.get(variable) or None
    shown = meta["shown"] or ("none" if default in ("", None) else str(default).replace("%", "%%"))
    parser.add_argument(
        _flag(field),
        dest=field.name,
        type=meta["parse"] or _converter(meta["kind"] or type(default), variable),
        default=raw if raw is not None else default,
        choices=meta["choices"],
        metavar=meta["metavar"],
        help=f"{help} (env {variable}; default {shown})",
    )


def _values(text: str) -> tuple[str, ...]:
    """The values of a variable that may hold several: separated by the path separator or commas."""
    return tuple(value.strip() for value in text.replace(os.pathsep, ",").split(",") if value.strip())


def _flag(field: dataclasses.Field) -> str:
    return field.metadata["flag"] or "--" + field.name.replace("_", "-")


def _converter(kind: type, variable: str) -> Callable[[str], Any]:
    if kind is str:
        return str

    def convert(text: str) -> Any:
        try:
            return kind(text)
        except ValueError:
            wanted = "a whole number" if kind is int else "a number"
            raise argparse.ArgumentTypeError(f"expected {wanted}, got {text!r} (the flag, or {variable})") from None

    return convert
