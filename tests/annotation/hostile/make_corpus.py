"""The hostile upload corpus: small files committed next to this script, plus the big
ones generated at test time (never committed).

Regenerate the committed files with `python tests/annotation/hostile/make_corpus.py`.
Each entry of REJECTED names a file and a fragment of the error a person must see.
"""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

HERE = Path(__file__).resolve().parent


def _image(fmt: str, size=(64, 48), color=(180, 120, 100), mode="RGB", **kw) -> bytes:
    from PIL import Image

    out = io.BytesIO()
    Image.new(mode, size, color).save(out, fmt, **kw)
    return out.getvalue()


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png_claiming(width: int, height: int) -> bytes:
    """A ~100-byte PNG whose header claims width x height pixels (a decompression bomb)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", ihdr)
        + _png_chunk(b"IDAT", zlib.compress(b"\0" * 4096))
        + _png_chunk(b"IEND", b"")
    )


def jpeg_claiming(width: int, height: int) -> bytes:
    """A small JPEG whose frame header (SOF0) claims width x height pixels."""
    data = bytearray(_image("JPEG", size=(16, 16)))
    sof = data.index(b"\xff\xc0")
    data[sof + 5 : sof + 7] = struct.pack(">H", height)
    data[sof + 7 : sof + 9] = struct.pack(">H", width)
    return bytes(data)


def corrupt_crc_png() -> bytes:
    data = bytearray(_image("PNG", size=(32, 32), color=(20, 200, 20)))
    idat = data.index(b"IDAT")
    data[idat + 6] ^= 0xFF  # one flipped byte inside IDAT: the chunk CRC no longer matches
    return bytes(data)


def png_text_bomb() -> bytes:
    """A valid 32x32 PNG carrying a zTXt chunk that inflates to 8 MB (a memory bomb)."""
    png = _image("PNG", size=(32, 32), color=(1, 2, 3))
    ztxt = _png_chunk(b"zTXt", b"Comment\0\0" + zlib.compress(b"A" * (8 * 1024 * 1024), 9))
    return png[:33] + ztxt + png[33:]  # right after IHDR


def gif_js_polyglot() -> bytes:
    """A GIF whose header doubles as JavaScript (GIF89a/*...*/=alert(1))."""
    gif = bytearray(_image("GIF", size=(8, 8)))
    gif[6:8] = b"/*"  # logical-screen width bytes open a JS comment
    return bytes(gif) + b"*/=alert(document.domain);//"


SVG = (
    b'<?xml version="1.0"?>\n<svg xmlns="http://www.w3.org/2000/svg" width="64" height="48">'
    b'<rect width="64" height="48" fill="#b47864"/><script>alert(document.cookie)</script></svg>\n'
)
HTML = b"<!doctype html><html><body><h1>not a photo</h1><script>fetch('/api/cases/')</script></body></html>\n"


def committed_files() -> dict[str, bytes]:
    """Small hostile files written into this folder (and committed)."""
    jpeg = _image("JPEG", size=(64, 48))
    png = _image("PNG", size=(64, 48))
    return {
        "empty.jpg": b"",
        "text_renamed.jpg": b"Patient notes, definitely not a JPEG.\n" * 4,
        "truncated.jpg": jpeg[: len(jpeg) // 2],
        "corrupt_crc.png": corrupt_crc_png(),
        "garbage_after_signature.png": b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 2,
        "bomb_100mp.png": png_claiming(10_000, 10_000),
        "bomb_61mp.jpg": jpeg_claiming(8_000, 7_700),
        "text_bomb.png": png_text_bomb(),
        "animation.gif": _image("GIF", size=(32, 32)),
        "bitmap.bmp": _image("BMP", size=(32, 32)),
        "scan.tiff": _image("TIFF", size=(32, 32)),
        "vector.svg": SVG,
        "svg_renamed.png": SVG,
        "page_renamed.jpg": HTML,
        "polyglot_html_png.png": HTML + png,
        "polyglot_gif_js.jpg": gif_js_polyglot(),
        "document_renamed.jpg": b"%PDF-1.4\n1 0 obj <</Type /Catalog>> endobj\ntrailer <</Root 1 0 R>>\n%%EOF\n",
    }


# file name -> fragment of the error message (case-insensitive) the uploader sees
REJECTED: dict[str, str] = {
    "empty.jpg": "the file is empty",
    "text_renamed.jpg": "not an image",
    "truncated.jpg": "truncated or corrupt",
    "corrupt_crc.png": "truncated or corrupt",
    "garbage_after_signature.png": "corrupt",
    "bomb_100mp.png": "megapixels",
    "bomb_61mp.jpg": "megapixels",
    "text_bomb.png": "corrupt",
    "animation.gif": "GIF images are not accepted",
    "bitmap.bmp": "BMP images are not accepted",
    "scan.tiff": "TIFF images are not accepted",
    "vector.svg": "not an image",
    "svg_renamed.png": "not an image",
    "page_renamed.jpg": "not an image",
    "polyglot_html_png.png": "not an image",
    "polyglot_gif_js.jpg": "GIF images are not accepted",
    "document_renamed.jpg": "not an image",
    "oversize_26mb.jpg": "the limit is 25 MB",  # generated at test time
}


def oversize_jpeg(size_bytes: int = 26 * 1024 * 1024) -> bytes:
    """A real JPEG padded past the 25 MB limit (generated at test time, never committed)."""
    jpeg = _image("JPEG", size=(64, 48))
    return jpeg + b"\0" * (size_bytes - len(jpeg))


GENERATED = {"oversize_26mb.jpg": oversize_jpeg}


def load(name: str) -> bytes:
    if name in GENERATED:
        return GENERATED[name]()
    return (HERE / name).read_bytes()


# Files that ARE photos but carry a payload: accepted, and the stored copy is re-encoded
# pixels only, so the payload is gone.
def sanitised_files() -> dict[str, tuple[bytes, bytes]]:
    """name -> (content, payload that must not survive in the stored file)."""
    jpeg = _image("JPEG", size=(64, 48))
    zip_tail = b"PK\x03\x04" + b"\x14\x00" + b"payload.html<script>alert(1)</script>"
    script = b"<script>alert(1)</script>"
    with_comment = jpeg[:2] + b"\xff\xfe" + struct.pack(">H", len(script) + 2) + script + jpeg[2:]
    return {
        "polyglot_jpeg_zip.jpg": (jpeg + zip_tail, b"PK\x03\x04"),
        "jpeg_script_comment.jpg": (with_comment, b"<script>"),
    }


if __name__ == "__main__":
    for name, content in committed_files().items():
        (HERE / name).write_bytes(content)
        print(f"{name:32s} {len(content):6d} bytes")
