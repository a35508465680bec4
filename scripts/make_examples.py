"""Draw the example frames in examples/frames/ (synthetic scenes, no third-party images).

    python scripts/make_examples.py

Writes, deterministically:
  shot.1001.png .. shot.1003.png  a red car driving past a tree (8-bit RGB sequence)
  street.jpg                      a street with a red and a blue car (JPEG)
  park_dog.16bit.png              a dog on grass (16-bit greyscale PNG)
and examples/prompts.txt.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

WIDTH, HEIGHT = 640, 360
SUPERSAMPLE = 4  # shapes are drawn this many times larger, then averaged: smooth edges
SEED = 1001

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
PROMPTS = ["red car", "car", "sky", "tree", "grass", "road", "dog"]

Color = tuple[int, int, int]


class Canvas:
    """ImageDraw in frame coordinates (640x360) on a supersampled transparent layer."""

    def __init__(self) -> None:
        self.layer = Image.new("RGBA", (WIDTH * SUPERSAMPLE, HEIGHT * SUPERSAMPLE))
        self.draw = ImageDraw.Draw(self.layer)

    @staticmethod
    def _scaled(points) -> list[float]:
        return [v * SUPERSAMPLE for v in points]

    def rect(self, x0, y0, x1, y1, color: Color, radius: float = 0) -> None:
        box = self._scaled((x0, y0, x1, y1))
        self.draw.rounded_rectangle(box, radius=radius * SUPERSAMPLE, fill=color)

    def ellipse(self, x0, y0, x1, y1, color: Color) -> None:
        self.draw.ellipse(self._scaled((x0, y0, x1, y1)), fill=color)

    def circle(self, x, y, r, color: Color) -> None:
        self.ellipse(x - r, y - r, x + r, y + r, color)

    def polygon(self, points, color: Color) -> None:
        flat = [v for point in points for v in point]
        self.draw.polygon(self._scaled(flat), fill=color)

    def line(self, x0, y0, x1, y1, color: Color, width: float) -> None:
        self.draw.line(self._scaled((x0, y0, x1, y1)), fill=color, width=round(width * SUPERSAMPLE))


def vertical_gradient(top: Color, bottom: Color) -> np.ndarray:
    t = np.linspace(0.0, 1.0, HEIGHT)[:, None, None]
    column = (1 - t) * np.array(top, float) + t * np.array(bottom, float)
    return np.broadcast_to(column, (HEIGHT, WIDTH, 3)).copy()


def render(background: np.ndarray, paint: Callable[[Canvas], None]) -> np.ndarray:
    """Paint shapes over a float RGB background; returns float RGB in [0, 255]."""
    canvas = Canvas()
    paint(canvas)
    layer = np.asarray(canvas.layer, dtype=np.float32) / 255.0
    rgb, alpha = layer[..., :3] * 255.0, layer[..., 3:]
    blocks = (HEIGHT, SUPERSAMPLE, WIDTH, SUPERSAMPLE)
    covered = (rgb * alpha).reshape(*blocks, 3).mean(axis=(1, 3))
    coverage = alpha.reshape(*blocks, 1).mean(axis=(1, 3))
    return background * (1 - coverage) + covered


# --- things in the scenes ---------------------------------------------------------------


def sun(c: Canvas, x, y) -> None:
    c.circle(x, y, 38, (255, 236, 170))
    c.circle(x, y, 30, (255, 214, 64))


def cloud(c: Canvas, x, y, size, rng: np.random.Generator) -> None:
    for _ in range(5):
        dx, dy = rng.uniform(-1.2, 1.2) * size, rng.uniform(-0.3, 0.3) * size
        r = rng.uniform(0.5, 0.8) * size
        c.ellipse(x + dx - r * 1.3, y + dy - r * 0.7, x + dx + r * 1.3, y + dy + r * 0.7, (250, 250, 252))


def tree(c: Canvas, x, ground, rng: np.random.Generator) -> None:
    c.rect(x - 9, ground - 95, x + 9, ground + 4, (101, 67, 33))
    for green in ((34, 110, 40), (52, 140, 52)):
        for _ in range(7):
            dx, dy = rng.uniform(-42, 42), rng.uniform(-60, 0)
            c.circle(x + dx, ground - 110 + dy, rng.uniform(26, 36), green)


def grass_tufts(c: Canvas, top, bottom, rng: np.random.Generator, count=60) -> None:
    for _ in range(count):
        x, y = rng.uniform(0, WIDTH), rng.uniform(top + 8, bottom)
        for lean in (-4, 0, 4):
            c.line(x, y, x + lean, y - 9, (46, 122, 42), 1.5)


def car(c: Canvas, x, ground, body: Color, length=190) -> None:
    """A car facing right; x is its rear end, ground the line its wheels stand on."""
    s = length / 190
    wheel_r = 22 * s
    c.polygon(
        [
            (x + 45 * s, ground - 62 * s),
            (x + 62 * s, ground - 92 * s),
            (x + 128 * s, ground - 92 * s),
            (x + 152 * s, ground - 62 * s),
        ],
        body,
    )
    c.polygon(
        [
            (x + 55 * s, ground - 62 * s),
            (x + 68 * s, ground - 85 * s),
            (x + 94 * s, ground - 85 * s),
            (x + 94 * s, ground - 62 * s),
        ],
        (180, 215, 240),
    )
    c.polygon(
        [
            (x + 100 * s, ground - 62 * s),
            (x + 100 * s, ground - 85 * s),
            (x + 124 * s, ground - 85 * s),
            (x + 142 * s, ground - 62 * s),
        ],
        (180, 215, 240),
    )
    c.rect(x, ground - 64 * s, x + length, ground - 18 * s, body, radius=12 * s)
    c.rect(x + length - 12 * s, ground - 54 * s, x + length - 2 * s, ground - 44 * s, (255, 240, 180), 3 * s)
    c.rect(x + 2 * s, ground - 54 * s, x + 10 * s, ground - 44 * s, (200, 30, 30), 2 * s)
    for wheel_x in (x + 40 * s, x + length - 40 * s):
        c.circle(wheel_x, ground - wheel_r, wheel_r, (25, 25, 28))
        c.circle(wheel_x, ground - wheel_r, wheel_r * 0.45, (170, 170, 175))


def building(c: Canvas, x0, x1, top, bottom, wall: Color) -> None:
    c.rect(x0, top, x1, bottom, wall)
    for wy in np.arange(top + 14, bottom - 30, 34):
        for wx in np.arange(x0 + 12, x1 - 22, 30):
            c.rect(wx, wy, wx + 16, wy + 20, (205, 225, 240))


def dog(c: Canvas, x, ground) -> None:
    """A sitting-up, side-on brown dog; x is its tail end."""
    fur, dark = (115, 72, 38), (70, 42, 20)
    c.polygon([(x, ground - 105), (x + 10, ground - 112), (x + 40, ground - 80), (x + 30, ground - 72)], fur)
    for leg_x in (x + 40, x + 62, x + 118, x + 140):
        c.rect(leg_x, ground - 60, leg_x + 16, ground, fur, radius=6)
    c.ellipse(x + 25, ground - 110, x + 170, ground - 48, fur)
    c.ellipse(x + 145, ground - 150, x + 215, ground - 90, fur)
    c.ellipse(x + 185, ground - 125, x + 235, ground - 95, fur)
    c.ellipse(x + 150, ground - 150, x + 172, ground - 105, dark)
    c.circle(x + 195, ground - 128, 5, (20, 20, 20))
    c.circle(x + 233, ground - 112, 7, (20, 20, 20))


# --- scenes -----------------------------------------------------------------------------


def countryside(frame_index: int) -> np.ndarray:
    rng = np.random.default_rng(SEED)  # same scenery in every frame; only the car moves
    horizon = 230

    def paint(c: Canvas) -> None:
        sun(c, 575, 65)
        cloud(c, 150, 60, 26, rng)
        cloud(c, 290, 100, 20, rng)
        c.rect(0, horizon, WIDTH, HEIGHT, (86, 168, 64))
        grass_tufts(c, horizon, HEIGHT, rng)
        tree(c, 430, horizon + 40, rng)
        car(c, 90 + 28 * frame_index, horizon + 95, (205, 28, 32))

    return render(vertical_gradient((70, 130, 210), (185, 215, 240)), paint)


def street() -> np.ndarray:
    def paint(c: Canvas) -> None:
        building(c, 0, 150, 60, 230, (160, 110, 90))
        building(c, 150, 330, 20, 230, (185, 180, 170))
        building(c, 330, 470, 90, 230, (120, 130, 150))
        building(c, 470, 640, 40, 230, (200, 170, 120))
        c.rect(0, 230, WIDTH, 250, (175, 175, 170))
        c.rect(0, 250, WIDTH, HEIGHT, (70, 72, 76))
        for x in range(10, WIDTH, 80):
            c.rect(x, 300, x + 44, 306, (235, 235, 225))
        car(c, 40, 300, (205, 28, 32), length=200)
        car(c, 380, 350, (35, 80, 190), length=220)

    return render(vertical_gradient((110, 160, 220), (200, 220, 238)), paint)


def park_dog() -> np.ndarray:
    rng = np.random.default_rng(SEED + 1)
    horizon = 200

    def paint(c: Canvas) -> None:
        cloud(c, 480, 70, 30, rng)
        c.rect(0, horizon, WIDTH, HEIGHT, (86, 168, 64))
        grass_tufts(c, horizon, HEIGHT, rng, count=40)
        tree(c, 90, horizon + 30, rng)
        dog(c, 250, 320)
        c.circle(540, 308, 14, (230, 60, 40))

    return render(vertical_gradient((80, 140, 215), (190, 218, 240)), paint)


def save_rgb8(image: np.ndarray, path: Path, **options) -> None:
    Image.fromarray(np.round(image).astype(np.uint8), "RGB").save(path, **options)


def save_grey16(image: np.ndarray, path: Path) -> None:
    """Rec. 601 luma in the full 16-bit range (values are not just 8-bit ones times 257)."""
    luma = image @ np.array([0.299, 0.587, 0.114])
    Image.fromarray(np.round(luma * 257).astype(np.uint16)).save(path, optimize=True)


def main() -> None:
    frames = EXAMPLES / "frames"
    frames.mkdir(parents=True, exist_ok=True)
    for index, number in enumerate((1001, 1002, 1003)):
        save_rgb8(countryside(index), frames / f"shot.{number}.png", optimize=True)
    save_rgb8(street(), frames / "street.jpg", quality=88)
    save_grey16(park_dog(), frames / "park_dog.16bit.png")
    (EXAMPLES / "prompts.txt").write_text("\n".join(PROMPTS) + "\n")
    for path in sorted(frames.iterdir()):
        print(f"{path.relative_to(EXAMPLES.parent)}  {path.stat().st_size // 1024} KB")


if __name__ == "__main__":
    main()
