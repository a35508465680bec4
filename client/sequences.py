"""Which files a ``maskfarm segment`` frame argument names.

Each argument is, in this order of preference:

- a file that exists: itself (even if its name holds ``#``, ``*``, ...);
- a frame pattern: the file name holds one frame token, a run of ``#`` or ``@`` (one
  character per digit of zero padding: ``shot.####.exr`` is ``shot.0042.exr`` for frame
  42 and ``shot.12345.exr`` for 12345) or a printf token ``%d`` / ``%04d``. With a frame
  list (``--frames 1001-1100``) it names exactly those frames, and a frame whose file is
  missing is reported (``Expansion.missing``); without one, every frame on disk that the
  pattern formats exactly (``shot.1001.exr`` matches ``####``, ``shot.01001.exr`` does not);
- a glob (``shots/*.png``): its matches, in natural order (``shot.2.png`` before ``shot.10.png``).

Patterns are expanded in frame order, arguments in the order given; a file named twice is
kept once (its masks would land on the same files). What cannot be expanded raises
``SequenceError`` with a message fit for the command line.
"""

from __future__ import annotations

import glob
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

_TOKEN = re.compile(r"#+|@+|%(0\d+)?d")
_GLOB_CHARS = re.compile(r"[*?\[]")
_RANGE = re.compile(r"(\d+)(?:-(\d+)(?:x(\d+))?)?")


class SequenceError(ValueError):
    """A frame argument or frame list that names no usable files."""


@dataclass(frozen=True)
class Expansion:
    """The files a command's frame arguments name, in order, and, per pattern argument,
    the frames of an explicit frame list whose files do not exist."""

    paths: list[Path] = field(default_factory=list)
    missing: dict[str, list[int]] = field(default_factory=dict)

    @property
    def missing_count(self) -> int:
        return sum(len(frames) for frames in self.missing.values())

    def describe_missing(self) -> list[str]:
        """One line per pattern with missing frames: ``"shot.####.exr: 1005-1007 missing"``."""
        return [
            f"{argument}: frame{'s' if len(frames) > 1 else ''} {describe_frames(frames)} missing"
            for argument, frames in self.missing.items()
        ]


@dataclass(frozen=True)
class FramePattern:
    """A file name pattern with one frame token: ``prefix`` + the zero-padded frame + ``suffix``."""

    folder: Path
    prefix: str
    padding: int
    suffix: str

    @classmethod
    def parse(cls, text: str) -> FramePattern | None:
        """The pattern in ``text``, or None when its file name has no frame token.
        Raises ``SequenceError`` for more than one token or a token in the folder."""
        path = Path(text)
        tokens = list(_TOKEN.finditer(path.name))
        if not tokens:
            if _TOKEN.search(str(path.parent)):
                raise SequenceError(f"{text}: the frame token must be in the file name, not the folder")
            return None
        if len(tokens) > 1:
            raise SequenceError(f"{text}: more than one frame token ({', '.join(t.group() for t in tokens)})")
        token = tokens[0]
        padding = int(token.group(1) or 1) if token.group().startswith("%") else len(token.group())
        return cls(path.parent, path.name[: token.start()], max(padding, 1), path.name[token.end() :])

    def path(self, frame: int) -> Path:
        return self.folder / f"{self.prefix}{frame:0{self.padding}d}{self.suffix}"

    def frames_on_disk(self) -> list[int]:
        """The frames whose files exist, ascending: names the pattern formats exactly."""
        regex = re.compile(re.escape(self.prefix) + r"(\d+)" + re.escape(self.suffix))
        try:
            names = os.listdir(self.folder)
        except OSError:
            return []
        frames = []
        for name in names:
            match = regex.fullmatch(name)
            if match and f"{int(match.group(1)):0{self.padding}d}" == match.group(1) and (self.folder / name).is_file():
                frames.append(int(match.group(1)))
        return sorted(frames)

    def __str__(self) -> str:
        return str(self.folder / f"{self.prefix}{'#' * self.padding}{self.suffix}")


def parse_frames(text: str) -> list[int]:
    """``"1001-1100"``, ``"1001-1100x2"`` (every 2nd), ``"1001,1005,1010-1020"`` (any mix)
    as the frame numbers they name, in the order written, each once. Raises
    ``SequenceError`` for anything else (a reversed range, a zero step, no frames)."""
    frames: dict[int, None] = {}
    for part in text.replace(" ", "").split(","):
        match = _RANGE.fullmatch(part)
        if not match:
            raise SequenceError(f"--frames: {part or text!r} is not a frame, a range FIRST-LAST or FIRST-LASTxSTEP")
        first, last, step = match.group(1), match.group(2), match.group(3)
        start, end, stride = int(first), int(last if last is not None else first), int(step or 1)
        if end < start:
            raise SequenceError(f"--frames: {part!r} ends before it starts")
        if stride < 1:
            raise SequenceError(f"--frames: {part!r} needs a step of at least 1")
        frames.update(dict.fromkeys(range(start, end + 1, stride)))
    return list(frames)


def expand_frames(arguments: Sequence[str], frames: Sequence[int] | None = None) -> Expansion:
    """The files ``arguments`` name (see the module docstring); ``frames`` is the frame
    list patterns expand to (None: the frames on disk). Raises ``SequenceError`` for an
    argument that names nothing, or a frame list with no pattern to apply it to."""
    paths: dict[Path, None] = {}
    missing: dict[str, list[int]] = {}
    patterns = 0
    for argument in arguments:
        found, absent, is_pattern = _expand_one(argument, frames)
        patterns += is_pattern
        paths.update(dict.fromkeys(found))
        if absent:
            missing[argument] = absent
    if frames is not None and not patterns:
        raise SequenceError("--frames needs a frame pattern among the frames (shot.####.exr or shot.%04d.exr)")
    return Expansion(list(paths), missing)


def natural_key(path: str | Path) -> list:
    """Sort key: digit runs compare as numbers, so ``shot.2`` comes before ``shot.10``."""
    return [(0, int(part), "") if part.isdigit() else (1, 0, part) for part in re.split(r"(\d+)", str(path)) if part]


def describe_frames(frames: Iterable[int]) -> str:
    """``[1, 2, 3, 7]`` as ``"1-3, 7"``: frame numbers for a message."""
    runs: list[list[int]] = []
    for frame in sorted(set(frames)):
        if runs and frame == runs[-1][1] + 1:
            runs[-1][1] = frame
        else:
            runs.append([frame, frame])
    return ", ".join(str(a) if a == b else f"{a}-{b}" for a, b in runs)


def _expand_one(argument: str, frames: Sequence[int] | None) -> tuple[list[Path], list[int], bool]:
    """(paths found, frames missing, whether it was a pattern) for one argument."""
    if Path(argument).is_file():
        return [Path(argument)], [], False
    pattern = FramePattern.parse(argument)
    if pattern is not None:
        if not pattern.folder.is_dir():
            raise SequenceError(f"{argument}: no such folder {str(pattern.folder)!r}")
        if frames is None:
            found = pattern.frames_on_disk()
            if not found:
                raise SequenceError(f"{argument}: no frames match")
            return [pattern.path(frame) for frame in found], [], True
        present = [frame for frame in frames if pattern.path(frame).is_file()]
        if not present:
            raise SequenceError(f"{argument}: none of frames {describe_frames(frames)} exist")
        kept = set(present)
        absent = [frame for frame in frames if frame not in kept]
        return [pattern.path(frame) for frame in present], absent, True
    if _GLOB_CHARS.search(argument):
        matches = sorted((Path(p) for p in glob.glob(argument) if Path(p).is_file()), key=natural_key)
        if not matches:
            raise SequenceError(f"{argument}: no files match")
        return matches, [], False
    if Path(argument).is_dir():
        folder = argument.rstrip("/\\") or argument
        raise SequenceError(
            f"{argument}: is a folder, not a frame: name its frames, e.g. '{folder}/*.png' "
            f"or a pattern such as '{folder}/shot.####.exr'"
        )
    raise SequenceError(f"{argument}: no such file")
