"""A PNG's header and text chunks, read as a stream with every chunk's CRC checked.

    from scripts.utils.formats.png import png_row
    row = png_row(open("scan.png", "rb"))   # width, height, bit_depth, mode, ..., text_chunks

Only the header and text chunks are held in memory (each at most
MAX_CHUNK_BYTES; a compressed text may inflate to MAX_TEXT_BYTES); the
image data passes through. A malformed file is a ValueError naming the chunk.
"""

from __future__ import annotations

import io
import struct
import zlib

MAX_TEXT_BYTES = 1 << 20  # a zTXt/iTXt chunk may not inflate beyond this (zip bombs)


MAX_CHUNK_BYTES = 16 << 20  # a header or text chunk held in memory


PNG_CHUNKS_READ = (b"IHDR", b"tEXt", b"zTXt", b"iTXt")


PNG_COLOR_MODES = {0: "L", 2: "RGB", 3: "P", 4: "LA", 6: "RGBA"}


def _png_text(kind: bytes, data: bytes) -> dict:
    keyword, _, rest = data.partition(b"\x00")
    entry = {"type": kind.decode(), "keyword": keyword.decode("latin-1")}
    if kind == b"tEXt":
        entry["text"] = rest.decode("latin-1")
    elif kind == b"zTXt":
        entry["text"] = _inflate(rest[1:]).decode("latin-1")
    else:  # iTXt: flag, method, language\0, translated keyword\0, text (UTF-8)
        compressed = rest[:1] == b"\x01"
        language, _, rest = rest[2:].partition(b"\x00")
        translated, _, text = rest.partition(b"\x00")
        entry["language"] = language.decode("ascii", "replace")
        entry["translated_keyword"] = translated.decode("utf-8", "replace")
        entry["text"] = (_inflate(text) if compressed else text).decode("utf-8", "replace")
    return entry


def _inflate(data: bytes) -> bytes:
    inflater = zlib.decompressobj()
    out = inflater.decompress(data, MAX_TEXT_BYTES)
    if inflater.unconsumed_tail:
        raise ValueError(f"a compressed text chunk inflates beyond {MAX_TEXT_BYTES} bytes")
    return out


def png_row(source) -> dict:
    """Read the IHDR and every text chunk of a PNG (bytes or a binary file), checking chunk CRCs.

    Streams: only the header and text chunks are held (one over
    MAX_CHUNK_BYTES is refused); image data and every other chunk are
    checked as they pass, so memory stays small whatever the file's size.
    """
    handle = io.BytesIO(source) if isinstance(source, (bytes, bytearray)) else source
    handle.seek(8)
    position, row, texts, seen_idat = 8, {}, [], False
    while True:
        header = handle.read(8)
        if len(header) < 8:
            raise ValueError("truncated PNG: the file ends before the IEND chunk")
        length, kind = struct.unpack(">I4s", header)
        name = kind.decode("latin-1")
        if kind not in PNG_CHUNKS_READ:  # image data and the rest: checked as a stream, never held
            crc, remaining = zlib.crc32(kind), length
            while remaining:
                piece = handle.read(min(remaining, 1 << 20))
                if not piece:
                    break
                crc, remaining = zlib.crc32(piece, crc), remaining - len(piece)
            body = b""
            cut = remaining > 0
        else:
            if length > MAX_CHUNK_BYTES:
                raise ValueError(
                    f"PNG chunk {name!r} of {length} bytes is over the limit of {MAX_CHUNK_BYTES}"
                )
            body = handle.read(length)
            crc, cut = zlib.crc32(kind + body), len(body) < length
        stored = handle.read(4)
        if cut or len(stored) < 4:
            raise ValueError(f"truncated PNG: chunk {name!r} is cut short")
        if struct.unpack(">I", stored)[0] != crc:
            raise ValueError(f"bad CRC in PNG chunk {name!r} at byte {position}")
        if kind == b"IHDR":
            if len(body) < 13:
                raise ValueError("PNG IHDR chunk is too short")
            width, height, depth, color = struct.unpack(">IIBB", body[:10])
            row.update(
                width=width,
                height=height,
                bit_depth=depth,
                color_type=color,
                mode=PNG_COLOR_MODES.get(color),
                rows=height,
                columns=width,
            )
        elif kind == b"IDAT":
            seen_idat = True
        elif kind in (b"tEXt", b"zTXt", b"iTXt"):
            texts.append(
                dict(
                    _png_text(kind, body),
                    position="after_image_data" if seen_idat else "before_image_data",
                )
            )
        elif kind == b"IEND":
            break
        position += 12 + length
    if "width" not in row:
        raise ValueError("PNG without an IHDR chunk")
    row["text_chunks"] = texts
    return row
