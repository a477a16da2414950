"""Small PNG bar charts with numpy and zlib: no plotting library in the install.

`bar_chart` draws panels of grouped bars (one group per category, one bar per series)
with a 5×7 bitmap font for the labels; `write_png` stores an RGB array as a PNG file.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

_FONT = {  # rows of 5 pixels, a byte each in hex (bit 4 = leftmost): 7 rows, 9 with a descender
    'a': "00000e010f110f", 'b': "1010161911111e", 'c': "00000e1010110e", 'd': "01010d1311110f",
    'e': "00000e111f100e", 'f': "0609081c080808", 'g': "00000f1111110f010e", 'h': "10101619111111",
    'i': "04000c0404040e", 'j': "02000602020202120c", 'k': "10101214181412", 'l': "0c04040404040e",
    'm': "00001a15151111", 'n': "00001619111111", 'o': "00000e1111110e", 'p': "00001e1111111e1010",
    'q': "00000f1111110f0101", 'r': "00001619101010", 's': "00000e100e011e", 't': "08081c08080906",
    'u': "0000111111130d", 'v': "00001111110a04", 'w': "0000111115150a", 'x': "0000110a040a11",
    'y': "0000111111110f010e", 'z': "00001f0204081f", '0': "0e11131519110e", '1': "040c040404040e",
    '2': "0e11010204081f", '3': "1f02040201110e", '4': "02060a121f0202", '5': "1f101e0101110e",
    '6': "0608101e11110e", '7': "1f010204080808", '8': "0e11110e11110e", '9': "0e11110f01020c",
    '%': "18190204081303", '.': "00000000000c0c", '-': "0000001f000000", '+': "0004041f040400",
    '(': "02040808080402", ')': "08040202020408", '/': "00010204081000", ':': "000c0c000c0c00",
    ',': "000000000c0408", '_': "0000000000001f", '=': "00001f001f0000", ' ': "00000000000000",
}
GLYPH_W, GLYPH_H = 6, 10
"""Cell of one character (5×7 glyph, 2 rows of descender, spacing), before scaling."""
PALETTE = ((31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40))
_INK = (40, 40, 40)
_GRID = (225, 225, 225)


def text_mask(text: str, scale: int = 2) -> np.ndarray:
    """A boolean image of `text` (lower-cased; characters the font lacks become gaps)."""
    chars = text.lower()
    mask = np.zeros((GLYPH_H, GLYPH_W * len(chars)), dtype=bool)
    for i, ch in enumerate(chars):
        code = _FONT.get(ch, _FONT[" "])
        for row in range(len(code) // 2):
            bits = int(code[2 * row:2 * row + 2], 16)
            for col in range(5):
                mask[row, i * GLYPH_W + col] = bool(bits >> (4 - col) & 1)
    return np.kron(mask, np.ones((scale, scale), dtype=bool)).astype(bool)


def write_png(path: Path, rgb: np.ndarray) -> None:
    """Write an H×W×3 uint8 array as an 8-bit RGB PNG."""
    height, width, _ = rgb.shape

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(
            ">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    raw = b"".join(b"\x00" + rgb[y].astype(np.uint8).tobytes() for y in range(height))
    path.write_bytes(b"\x89PNG\r\n\x1a\n"
                     + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b""))


class Canvas:
    """An RGB image to draw rectangles and text on."""

    def __init__(self, width: int, height: int) -> None:
        self.rgb = np.full((height, width, 3), 255, dtype=np.uint8)

    def rect(self, x0: int, y0: int, x1: int, y1: int, color: Sequence[int]) -> None:
        """Fill [x0, x1) × [y0, y1) (clipped to the image)."""
        h, w, _ = self.rgb.shape
        x0, x1 = sorted((max(0, min(w, x0)), max(0, min(w, x1))))
        y0, y1 = sorted((max(0, min(h, y0)), max(0, min(h, y1))))
        self.rgb[y0:y1, x0:x1] = color

    def text(self, x: int, y: int, text: str, color: Sequence[int] = _INK, scale: int = 2,
             vertical: bool = False, anchor: str = "left") -> None:
        """Draw `text` with its top-left corner at (x, y); `anchor` "right" or "center"
        moves it left by all or half of its width; vertical text reads bottom to top."""
        mask = text_mask(text, scale)
        if vertical:
            mask = np.rot90(mask)
        h, w = mask.shape
        if anchor == "right":
            x -= w
        elif anchor == "center":
            x -= w // 2
        ih, iw, _ = self.rgb.shape
        x0, y0 = max(0, x), max(0, y)
        x1, y1 = min(iw, x + w), min(ih, y + h)
        if x1 <= x0 or y1 <= y0:
            return
        region = mask[y0 - y:y1 - y, x0 - x:x1 - x]
        self.rgb[y0:y1, x0:x1][region] = color


@dataclass(frozen=True, slots=True)
class Panel:
    """One chart: a value per category and series (None: no data), in percent."""

    title: str
    values: Sequence[Sequence[float | None]]
    """values[series][category]"""
    top: float = 100.0


def bar_chart(path: Path, title: str, categories: Sequence[str], series: Sequence[str],
              panels: Sequence[Panel]) -> None:
    """Panels of grouped bars sharing the category axis, written as a PNG."""
    bar, gap, left, right = 12, 14, 70, 20
    group = bar * len(series) + gap
    panel_h, label_h = 170, 8 + 12 * max((len(c) for c in categories), default=0)
    width = max(left + right + group * len(categories), left + right + 12 * len(title))
    height = 60 + len(panels) * (panel_h + 40) + label_h + 10
    c = Canvas(width, height)
    c.text(left, 10, title, scale=2)
    x = left
    for i, name in enumerate(series):  # legend
        c.rect(x, 34, x + 14, 46, PALETTE[i % len(PALETTE)])
        c.text(x + 20, 35, name)
        x += 30 + 12 * len(name)
    y = 60
    for panel in panels:
        c.text(left, y, panel.title)
        base = y + 20 + panel_h
        for tick in (0.0, 0.25, 0.5, 0.75, 1.0):
            ty = base - int(tick * panel_h)
            c.rect(left - 4, ty, left + group * len(categories), ty + 1, _GRID)
            c.text(left - 8, ty - 7, f"{tick * panel.top:g}%", anchor="right")
        for k in range(len(categories)):
            for s, values in enumerate(panel.values):
                value = values[k]
                if value is None:
                    continue
                x0 = left + k * group + gap // 2 + s * bar
                top = base - int(min(value, panel.top) / panel.top * panel_h)
                c.rect(x0, top, x0 + bar - 1, base, PALETTE[s % len(PALETTE)])
        c.rect(left - 4, base, left + group * len(categories), base + 1, _INK)
        y = base + 40
    label_y = y - 30
    for k, name in enumerate(categories):
        c.text(left + k * group + group // 2 - 7, label_y, name, vertical=True)
    write_png(path, c.rgb)
