"""Small, valid JPEG and PNG files made from a seed (no imaging library needed).

The JPEGs are baseline, grayscale, 8x8 blocks of one level each (DC-only coding with a tiny
Huffman table); the PNGs are 8x8 RGB of one colour. A comment (JPEG COM / PNG tEXt) names the
image, so two different images never have the same bytes, and the same image always does.
"""

from __future__ import annotations

import struct
import zlib

JPEG_MAGIC = b"\xff\xd8\xff"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


class _Bits:
    """MSB-first bit writer with JPEG byte stuffing."""

    def __init__(self) -> None:
        self.out = bytearray()
        self.acc = 0
        self.n = 0

    def put(self, value: int, length: int) -> None:
        for i in range(length - 1, -1, -1):
            self.acc = (self.acc << 1) | ((value >> i) & 1)
            self.n += 1
            if self.n == 8:
                self.out.append(self.acc)
                if self.acc == 0xFF:
                    self.out.append(0)
                self.acc = self.n = 0

    def flush(self) -> bytes:
        if self.n:
            self.put((1 << (8 - self.n)) - 1, 8 - self.n)
        return bytes(self.out)


def _segment(marker: int, payload: bytes) -> bytes:
    return struct.pack(">BBH", 0xFF, marker, len(payload) + 2) + payload


def jpeg(levels: list[int], comment: str, padding: int = 0) -> bytes:
    """A grayscale JPEG, 8 px high and 8 px wide per level (0-255), with a COM segment.

    ``padding`` adds that many bytes of extra COM segments (an oversized file).
    """
    if not levels:
        raise ValueError("at least one level")
    width = 8 * len(levels)
    dqt = _segment(0xDB, bytes([0x00]) + bytes([1] * 64))
    sof = _segment(0xC0, struct.pack(">BHHB", 8, 8, width, 1) + bytes([1, 0x11, 0]))
    # DC table: categories 0..11, all 4-bit codes; AC table: only EOB, code "0".
    dc_bits = bytes([0, 0, 0, 12] + [0] * 12)
    dht_dc = _segment(0xC4, bytes([0x00]) + dc_bits + bytes(range(12)))
    ac_bits = bytes([1] + [0] * 15)
    dht_ac = _segment(0xC4, bytes([0x10]) + ac_bits + bytes([0x00]))
    sos = _segment(0xDA, bytes([1, 1, 0x00, 0, 63, 0]))
    bits = _Bits()
    previous = 0
    for level in levels:
        dc = 8 * (max(0, min(255, level)) - 128)
        diff, previous = dc - previous, dc
        size = abs(diff).bit_length()
        bits.put(size, 4)
        if size:
            bits.put(diff if diff >= 0 else diff + (1 << size) - 1, size)
        bits.put(0, 1)  # EOB
    com = _segment(0xFE, comment.encode()[:60000])
    pad = b""
    while padding > 0:
        chunk = min(padding, 60000)
        pad += _segment(0xFE, b"\x00" * chunk)
        padding -= chunk
    return b"\xff\xd8" + com + pad + dqt + sof + dht_dc + dht_ac + sos + bits.flush() + b"\xff\xd9"


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png(rgb: tuple[int, int, int], comment: str, size: int = 8) -> bytes:
    """An RGB PNG of one colour, ``size`` px square, with a tEXt comment."""
    row = b"\x00" + bytes(rgb) * size
    ihdr = struct.pack(">IIBBBBB", size, size, 8, 2, 0, 0, 0)
    text = b"Comment\x00" + comment.encode("latin-1", "replace")
    return (
        PNG_MAGIC
        + _chunk(b"IHDR", ihdr)
        + _chunk(b"tEXt", text)
        + _chunk(b"IDAT", zlib.compress(row * size))
        + _chunk(b"IEND", b"")
    )
