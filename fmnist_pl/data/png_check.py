"""Does a PNG file hold as much image data as its header says?

Pillow decodes a PNG whose compressed stream ends early (a header edited to a larger size, a file
cut and re-closed) without an error, filling the missing rows with zeros. This check reads the
file's IDAT chunks and counts the bytes they decompress to, in constant memory.
"""

from __future__ import annotations

import struct
import zlib
from contextlib import nullcontext
from pathlib import Path
from typing import BinaryIO

SIGNATURE = b"\x89PNG\r\n\x1a\n"
CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}  # by PNG colour type
# Adam7 interlacing: each pass's first column, first row, column step and row step.
ADAM7 = ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2))
CHUNK = 1 << 20
Inflater = type(zlib.decompressobj())  # zlib names its class only privately


def expected_bytes(width: int, height: int, bit_depth: int, colour_type: int, interlaced: bool) -> int:
    """The decompressed size of the image data: each row is a filter byte and its packed pixels."""
    bits = bit_depth * CHANNELS[colour_type]

    def rows(columns: int, count: int) -> int:
        return 0 if columns == 0 or count == 0 else count * (1 + (columns * bits + 7) // 8)

    if not interlaced:
        return rows(width, height)
    return sum(rows(max(0, (width - x + dx - 1) // dx), max(0, (height - y + dy - 1) // dy)) for x, y, dx, dy in ADAM7)


def png_shortfall(source: Path | BinaryIO) -> str | None:
    """Why the image data of ``source`` (a file, or a seekable binary stream read from its start) does
    not fill its header's size, or None when it does (or it is no PNG)."""
    if not isinstance(source, Path):
        source.seek(0)
    with open(source, "rb") if isinstance(source, Path) else nullcontext(source) as handle:
        if handle.read(8) != SIGNATURE:
            return None
        inflater = zlib.decompressobj()
        header = None
        held = 0
        while len(head := handle.read(8)) == 8:
            length, kind = struct.unpack(">I4s", head)
            if kind == b"IHDR":
                header = struct.unpack(">IIBBBBB", handle.read(13))
                handle.seek(length - 13 + 4, 1)
            elif kind == b"IDAT":
                for start in range(0, length, CHUNK):
                    held += _inflated_length(inflater, handle.read(min(CHUNK, length - start)))
                handle.seek(4, 1)
            elif kind == b"IEND":
                break
            else:
                handle.seek(length + 4, 1)
    if header is None or header[3] not in CHANNELS:
        return None  # Pillow has already refused such a file
    width, height, bit_depth, colour_type, _, _, interlace = header
    needed = expected_bytes(width, height, bit_depth, colour_type, bool(interlace))
    if held >= needed:
        return None
    if not interlace:
        return f"the header says {width} x {height} pixels but the data holds {held // (needed // height)} rows"
    return f"the header says {width} x {height} pixels but the data holds {held} of its {needed} bytes"


def _inflated_length(inflater: Inflater, data: bytes) -> int:
    """Decompress ``data`` a megabyte at a time, keeping only the count."""
    total = 0
    while data and not inflater.eof:
        total += len(inflater.decompress(data, CHUNK))
        data = inflater.unconsumed_tail
    return total
