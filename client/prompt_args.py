"""``maskfarm segment``'s prompt flags: each ``--not`` and ``--prompt-threshold`` (``-smooth``,
``-dilate``, ``-blur``) belongs to the ``-p``/``--image-prompt`` before it; a prompts file
(``--prompts-file``) holds one prompt a line in the same words.

    maskfarm segment shot.####.exr -p person --not shadow -p sky --prompt-threshold 0.3 -p car

A prompts file line is what follows ``-p`` on the command line, e.g.
``person --not shadow --not "cast shadow"`` or ``sky --prompt-threshold 0.3`` (``--threshold``
and the other job flags mean the same there, since a line is one prompt); a line
``--image-prompt car.png`` is an image prompt; blank lines and ``#`` comments are skipped.
"""

from __future__ import annotations

import argparse
import shlex
from pathlib import Path
from typing import NoReturn

from maskfarm.core.params import MASK_PARAMS, MaskParams
from maskfarm.core.prompts import OVERRIDES, Prompt

MAX_PROMPTS_FILE_BYTES = 1024 * 1024
_TYPES = {knob.name: type(knob.default) for knob in MASK_PARAMS if knob.name in OVERRIDES}


class PromptArgsError(ValueError):
    """A prompt flag or prompts-file line that cannot be used; the message names it."""


def add_prompt_options(parser: argparse.ArgumentParser) -> None:
    """The prompt flags, collected in order into ``args.prompt_items`` (see ``prompts_from_args``)."""
    parser.add_argument(
        "--prompt", "-p", action=_NewPrompt, dest="prompt_items", metavar="TEXT", help="text prompt; repeat for several"
    )
    parser.add_argument(
        "--image-prompt",
        action=_NewPrompt,
        dest="prompt_items",
        metavar="IMAGE",
        help="an example image of what to find (CLIPSeg's visual prompt); its masks go to OUTPUT/<image file stem>/",
    )
    parser.add_argument(
        "--not",
        action=_Negative,
        dest="prompt_items",
        metavar="TEXT",
        help="take this out of the mask of the -p before it (its mask minus this one's); repeat for several",
    )
    for name in OVERRIDES:
        parser.add_argument(
            f"--prompt-{name}",
            action=_Override,
            dest="prompt_items",
            type=_TYPES[name],
            metavar=name.upper(),
            help=f"the --{name} of the -p before it",
        )
    parser.add_argument(
        "--prompts-file",
        action=_PromptsFile,
        dest="prompt_items",
        metavar="FILE",
        help="more prompts, one a line: TEXT [--not TEXT] [--prompt-threshold T] ..., or "
        "--image-prompt IMAGE; # comments",
    )


def prompts_from_args(args: argparse.Namespace, job: MaskParams) -> list[str | Prompt]:
    """The prompts the flags gave, in order (plain strings where nothing else was said);
    raises ``PromptArgsError`` for none, or for an override out of range."""
    items = getattr(args, "prompt_items", None) or []
    if not items:
        raise PromptArgsError("give at least one prompt (-p, --image-prompt or --prompts-file)")
    prompts = [_prompt(item) for item in items]
    for prompt in prompts:
        try:
            prompt.params(job)
        except ValueError as error:
            raise PromptArgsError(f"{prompt.name}: --prompt-{error}") from None
    return [prompt.text if prompt.is_plain else prompt for prompt in prompts]


def _prompt(item: dict) -> Prompt:
    from maskfarm.client.prompts import image_prompt

    options = {key: value for key, value in item.items() if key not in ("text", "image")}
    options["negatives"] = tuple(options.get("negatives", ()))
    if "image" in item:
        try:
            return image_prompt(Path(item["image"]), **options)
        except OSError as error:
            raise PromptArgsError(f"--image-prompt {item['image']}: {error.strerror or error}") from None
    return Prompt(item["text"], **options)


def _items(namespace: argparse.Namespace) -> list[dict]:
    if getattr(namespace, "prompt_items", None) is None:
        namespace.prompt_items = []
    return namespace.prompt_items


def _last(parser: argparse.ArgumentParser, namespace: argparse.Namespace, flag: str) -> dict:
    items = _items(namespace)
    if not items:
        parser.error(f"{flag} belongs to a prompt: give it after -p TEXT (or --image-prompt IMAGE)")
    return items[-1]


class _NewPrompt(argparse.Action):
    def __call__(self, parser, namespace, value, option_string=None) -> None:
        key = "image" if option_string == "--image-prompt" else "text"
        _items(namespace).append({key: value})


class _Negative(argparse.Action):
    def __call__(self, parser, namespace, value, option_string=None) -> None:
        _last(parser, namespace, option_string).setdefault("negatives", []).append(value)


class _Override(argparse.Action):
    def __call__(self, parser, namespace, value, option_string=None) -> None:
        _last(parser, namespace, option_string)[option_string.removeprefix("--prompt-")] = value


class _PromptsFile(argparse.Action):
    def __call__(self, parser, namespace, value, option_string=None) -> None:
        try:
            _items(namespace).extend(read_prompts_file(value))
        except PromptArgsError as error:
            parser.error(str(error))


def read_prompts_file(path: str | Path) -> list[dict]:
    """A prompts file's prompts, as the flags collect them; raises ``PromptArgsError``
    naming the file and line."""
    try:
        with open(path, "rb") as file:
            data = file.read(MAX_PROMPTS_FILE_BYTES + 1)
    except OSError as error:
        raise PromptArgsError(f"--prompts-file {path}: {error.strerror or error}") from None
    if len(data) > MAX_PROMPTS_FILE_BYTES:
        raise PromptArgsError(f"--prompts-file {path}: larger than {MAX_PROMPTS_FILE_BYTES // 1024} KiB")
    items = []
    for number, line in enumerate(data.decode("utf-8", errors="replace").splitlines(), start=1):
        try:
            words = shlex.split(line, comments=True)
            if words:
                items.append(_line_prompt(words))
        except (ValueError, _LineError) as error:
            raise PromptArgsError(f"--prompts-file {path}, line {number}: {error}") from None
    return items


class _LineError(Exception):
    pass


class _LineParser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise _LineError(message)


def _line_prompt(words: list[str]) -> dict:
    parser = _LineParser(prog="", add_help=False)
    parser.add_argument("text", nargs="*")
    parser.add_argument("--image-prompt", default="")
    parser.add_argument("--not", action="append", default=[], dest="negatives")
    for name in OVERRIDES:
        parser.add_argument(f"--prompt-{name}", f"--{name}", type=_TYPES[name], dest=name)
    line = parser.parse_args(words)
    text = " ".join(line.text)
    if bool(text) == bool(line.image_prompt):
        raise _LineError("give a text or --image-prompt IMAGE, exactly one")
    item: dict = {"image": line.image_prompt} if line.image_prompt else {"text": text}
    if line.negatives:
        item["negatives"] = line.negatives
    item.update({name: getattr(line, name) for name in OVERRIDES if getattr(line, name) is not None})
    return item
