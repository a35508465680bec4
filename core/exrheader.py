"""What an OpenEXR file's header says, read without decoding a pixel, and which channels
a layer (AOV) reads.

Pure Python on purpose: the server checks every frame it accepts, and an EXR header is a
plain attribute list (name, type, size, value), so reading one here costs microseconds,
adds no native code at the API's edge, and needs no OpenEXR on the server. Only what the
checks use is kept: channels, data and display windows, compression and tiling (for the
size of the chunk offset table, whose entries must all point inside the file: a cheap test
that catches a truncated file without decompressing it).

Layer rule (shared by the server's check and the worker's decoder): a channel
``diffuse.R`` is channel ``R`` of layer ``diffuse``; ``R`` is of layer ``""``. A layer
reads as colour when it has R, G and B; else as grey from Y; else as grey from its one
channel that is not A. Anything else (say, only R and G) is not readable as a picture.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

MAGIC = b"\x76\x2f\x31\x01"
MAX_ATTRIBUTES = 10_000
MAX_CHANNELS = 10_000
MAX_PARTS = 1_000

_TILED, _LONG_NAMES, _DEEP, _MULTIPART = 0x200, 0x400, 0x800, 0x1000
_LINES_PER_CHUNK = {0: 1, 1: 1, 2: 1, 3: 16, 4: 32, 5: 16, 6: 32, 7: 32, 8: 32, 9: 256, 10: 256, 11: 32}
"""Scanlines per chunk of each compression (OpenEXR's numbering); one not listed here
(a newer one) skips the offset-table check and is left to the worker's decoder."""
PIXEL_TYPES = {0: "uint", 1: "half", 2: "float"}


class ExrHeaderError(ValueError):
    """The bytes are not a readable OpenEXR header; the message says why."""


@dataclass(frozen=True)
class Box:
    """An inclusive pixel box, as EXR stores windows: (x_min, y_min) to (x_max, y_max)."""

    x_min: int
    y_min: int
    x_max: int
    y_max: int

    @property
    def width(self) -> int:
        return self.x_max - self.x_min + 1

    @property
    def height(self) -> int:
        return self.y_max - self.y_min + 1


@dataclass(frozen=True)
class Channel:
    name: str
    pixel_type: str
    """``"uint"``, ``"half"`` or ``"float"``."""
    x_sampling: int = 1
    y_sampling: int = 1


@dataclass(frozen=True)
class Part:
    channels: tuple[Channel, ...]
    data_window: Box
    display_window: Box
    compression: int
    chunk_count: int | None
    """Entries of the part's offset table, when known (``None``: not checked)."""
    tiled: bool = False


@dataclass(frozen=True)
class ExrHeader:
    parts: tuple[Part, ...]
    offsets_end: int
    """Where the offset tables end (the pixel data starts); where the header ends when
    they were not checked (``read_header(check_chunks=False)``)."""

    @property
    def display_window(self) -> Box:
        """The frame: the first part's display window (every part shares it)."""
        return self.parts[0].display_window

    @property
    def channel_names(self) -> list[str]:
        return [channel.name for part in self.parts for channel in part.channels]


def is_exr(data: bytes) -> bool:
    return data[:4] == MAGIC


def read_header(data: bytes, *, check_chunks: bool = True) -> ExrHeader:
    """The header of an EXR file (every part), its windows and offset tables checked for
    sanity; raises ``ExrHeaderError``. Deep files are refused (no picture to read).
    ``check_chunks=False``: ``data`` may be only the file's start (a probe of a large file
    by path), so the offset tables, which need the whole file, are not checked."""
    if not is_exr(data):
        raise ExrHeaderError("not an OpenEXR file")
    if len(data) < 8:
        raise ExrHeaderError("truncated header")
    (version,) = struct.unpack_from("<I", data, 4)
    if version & 0xFF != 2:
        raise ExrHeaderError(f"unsupported OpenEXR version {version & 0xFF}")
    if version & _DEEP:
        raise ExrHeaderError("deep EXR files are not supported")
    reader = _Reader(data, 8, 255 if version & _LONG_NAMES else 31)
    multipart = bool(version & _MULTIPART)
    parts = []
    while True:
        if multipart and reader.peek_end():
            reader.offset += 1
            break
        attributes = reader.attributes()
        parts.append(_part(attributes, tiled=bool(version & _TILED), multipart=multipart))
        if not multipart:
            break
        if len(parts) > MAX_PARTS:
            raise ExrHeaderError(f"over {MAX_PARTS} parts")
    if not parts:
        raise ExrHeaderError("no parts")
    if not check_chunks:
        return ExrHeader(tuple(parts), reader.offset)
    return ExrHeader(tuple(parts), _check_offsets(data, reader.offset, parts, multipart))


def layer_channels(channel_names: Iterable[str], layer: str) -> tuple[str, ...]:
    """The channels layer ``layer`` reads as a picture: three (R, G, B) or one (grey);
    raises ``ValueError`` naming the readable layers when it has none of those."""
    names = list(channel_names)
    found = _layer_channels(names, layer)
    if found is None:
        available = ", ".join(repr(name) for name in readable_layers(names)) or "none"
        raise ValueError(f"no readable layer {layer!r} (layers: {available})")
    return found


def readable_layers(channel_names: Iterable[str]) -> list[str]:
    """The layers that read as a picture, sorted (``""`` is R, G, B)."""
    names = list(channel_names)
    layers = {name.rpartition(".")[0] for name in names}
    return sorted(layer for layer in layers if _layer_channels(names, layer) is not None)


def _layer_channels(names: list[str], layer: str) -> tuple[str, ...] | None:
    prefix = f"{layer}." if layer else ""
    own = {name[len(prefix) :]: name for name in names if name.startswith(prefix) and "." not in name[len(prefix) :]}
    if all(key in own for key in "RGB"):
        return own["R"], own["G"], own["B"]
    if "Y" in own:
        return (own["Y"],)
    others = [name for key, name in own.items() if key != "A"]
    return (others[0],) if len(others) == 1 else None


class _Reader:
    def __init__(self, data: bytes, offset: int, max_name: int) -> None:
        self.data, self.offset, self.max_name = data, offset, max_name

    def peek_end(self) -> bool:
        self._need(1)
        return self.data[self.offset] == 0

    def attributes(self) -> dict[str, tuple[str, bytes]]:
        found: dict[str, tuple[str, bytes]] = {}
        while not self.peek_end():
            if len(found) >= MAX_ATTRIBUTES:
                raise ExrHeaderError(f"over {MAX_ATTRIBUTES} header attributes")
            name, kind = self._name(), self._name()
            self._need(4)
            (size,) = struct.unpack_from("<i", self.data, self.offset)
            self.offset += 4
            if size < 0:
                raise ExrHeaderError(f"attribute {name!r} has a negative size")
            self._need(size)
            found[name] = (kind, self.data[self.offset : self.offset + size])
            self.offset += size
        self.offset += 1
        return found

    def _name(self) -> str:
        end = self.data.find(b"\0", self.offset, self.offset + self.max_name + 1)
        if end < 0:
            self._need(self.max_name + 1)
            raise ExrHeaderError(f"a header name longer than {self.max_name} bytes")
        name = self.data[self.offset : end].decode("latin-1")
        self.offset = end + 1
        return name

    def _need(self, size: int) -> None:
        if self.offset + size > len(self.data):
            raise ExrHeaderError("truncated header")


def _part(attributes: dict[str, tuple[str, bytes]], *, tiled: bool, multipart: bool) -> Part:
    for required in ("channels", "compression", "dataWindow", "displayWindow"):
        if required not in attributes:
            raise ExrHeaderError(f"header has no {required!r} attribute")
    channels = _channels(_value(attributes, "channels", "chlist"))
    data_window = _box(attributes, "dataWindow")
    display_window = _box(attributes, "displayWindow")
    compression = _value(attributes, "compression", "compression")
    if len(compression) != 1:
        raise ExrHeaderError("bad compression attribute")
    kind = attributes.get("type", ("string", b""))[1].decode("latin-1")
    if kind.startswith("deep"):
        raise ExrHeaderError("deep EXR parts are not supported")
    if multipart:
        count = _value(attributes, "chunkCount", "int") if "chunkCount" in attributes else b""
        chunk_count = struct.unpack("<i", count)[0] if len(count) == 4 else None
        if chunk_count is None:
            raise ExrHeaderError("multi-part header has no chunkCount")
    elif tiled:
        chunk_count = _tile_count(_value(attributes, "tiles", "tiledesc"), data_window)
    else:
        lines = _LINES_PER_CHUNK.get(compression[0])
        chunk_count = -(-data_window.height // lines) if lines else None
    tiled = kind.startswith("tiled") if multipart else tiled
    return Part(channels, data_window, display_window, compression[0], chunk_count, tiled)


def _value(attributes: dict[str, tuple[str, bytes]], name: str, kind: str) -> bytes:
    found_kind, value = attributes.get(name, (kind, b""))
    if found_kind != kind:
        raise ExrHeaderError(f"attribute {name!r} is a {found_kind!r}, not a {kind!r}")
    return value


def _box(attributes: dict[str, tuple[str, bytes]], name: str) -> Box:
    value = _value(attributes, name, "box2i")
    if len(value) != 16:
        raise ExrHeaderError(f"bad {name}")
    box = Box(*struct.unpack("<4i", value))
    if box.width <= 0 or box.height <= 0:
        raise ExrHeaderError(f"empty {name} ({box.x_min},{box.y_min})-({box.x_max},{box.y_max})")
    return box


def _channels(value: bytes) -> tuple[Channel, ...]:
    channels: list[Channel] = []
    offset = 0
    while offset < len(value) and value[offset] != 0:
        if len(channels) >= MAX_CHANNELS:
            raise ExrHeaderError(f"over {MAX_CHANNELS} channels")
        end = value.find(b"\0", offset)
        if end < 0 or end + 17 > len(value):
            raise ExrHeaderError("bad channel list")
        pixel_type, _, x_sampling, y_sampling = struct.unpack_from("<iB3xii", value, end + 1)
        if pixel_type not in PIXEL_TYPES or x_sampling < 1 or y_sampling < 1:
            raise ExrHeaderError("bad channel list")
        channels.append(Channel(value[offset:end].decode("latin-1"), PIXEL_TYPES[pixel_type], x_sampling, y_sampling))
        offset = end + 17
    if offset >= len(value):
        raise ExrHeaderError("bad channel list")
    if not channels:
        raise ExrHeaderError("no channels")
    return tuple(channels)


def _tile_count(value: bytes, window: Box) -> int:
    if len(value) != 9:
        raise ExrHeaderError("bad tiles attribute")
    tile_w, tile_h, mode = struct.unpack("<IIB", value)
    if tile_w < 1 or tile_h < 1:
        raise ExrHeaderError("bad tiles attribute")
    level_mode, round_up = mode & 0xF, bool(mode >> 4)

    def levels(size: int) -> int:
        log = math.log2(size)
        return (math.ceil(log) if round_up else math.floor(log)) + 1

    def level_size(size: int, level: int) -> int:
        return max(((size + (1 << level) - 1) if round_up else size) >> level, 1)

    def tiles(level_x: int, level_y: int) -> int:
        return -(-level_size(window.width, level_x) // tile_w) * -(-level_size(window.height, level_y) // tile_h)

    if level_mode == 0:
        return tiles(0, 0)
    if level_mode == 1:
        return sum(tiles(level, level) for level in range(levels(max(window.width, window.height))))
    if level_mode == 2:
        return sum(tiles(x, y) for x in range(levels(window.width)) for y in range(levels(window.height)))
    raise ExrHeaderError(f"unknown tile level mode {level_mode}")


def _check_offsets(data: bytes, start: int, parts: list[Part], multipart: bool) -> int:
    """Every chunk must lie inside the file: its offset past the tables, and its packed
    size (in the chunk's own small header) ending by the end of the file. A file cut short
    (the usual corruption) fails here, without a byte being decompressed. Returns where
    the tables end."""
    if any(part.chunk_count is None for part in parts):
        return start
    counts = [part.chunk_count for part in parts if part.chunk_count is not None]  # all of them, as checked above
    if any(count < 1 for count in counts):
        raise ExrHeaderError("bad chunk count")
    end = start + 8 * sum(counts)
    if end > len(data):
        raise ExrHeaderError("truncated chunk offset table")
    offsets = np.frombuffer(data, dtype="<u8", count=sum(counts), offset=start).astype(np.int64)
    # A chunk: [part number,] then y (scanline) or 4 tile coordinates, then the packed size.
    prefix = np.repeat([(4 if multipart else 0) + (16 if part.tiled else 4) for part in parts], counts)
    if offsets.min() < end or (offsets + prefix + 4).max() > len(data):
        raise ExrHeaderError("truncated or corrupt: a chunk lies outside the file")
    everything = np.frombuffer(data, dtype=np.uint8)
    size_at = offsets + prefix
    sizes = sum(everything[size_at + i].astype(np.int64) << (8 * i) for i in range(4))
    if (size_at + 4 + sizes).max() > len(data):
        raise ExrHeaderError("truncated: a chunk's pixel data runs past the end of the file")
    return end
