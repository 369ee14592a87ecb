"""Decode every upload before accepting it.

`clean_image` takes the raw bytes of an upload and returns RGB pixels re-encoded
without any metadata (EXIF orientation applied first, then EXIF/GPS dropped), or raises
`ImageRejected` with a message a person can act on. Nothing is written here.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import warnings
from dataclasses import dataclass

import numpy as np
from django.conf import settings
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

try:  # HEIC/HEIF from iPhones
    import pillow_heif

    pillow_heif.register_heif_opener()
    HEIF_ENABLED = True
except Exception:  # pragma: no cover - optional decoder
    HEIF_ENABLED = False

ImageFile.LOAD_TRUNCATED_IMAGES = False
# Peak memory while one upload is cleaned, in bytes per decoded pixel, above the upload
# and the encoded result (Pillow keeps RGB at 4 bytes/pixel): 16-bit grey 2 -> 1 (strips)
# -> 4, peak 1 + 4 = 5; 8-bit RGB 4 plus the encoder; with transparency 4 + 4 = 8. So at the
# 60 MP pixel limit at most 480 MB, 300 MB for a 16-bit grey scan (bench/upload_memory.py;
# tests/test_upload_memory.py checks both).
PEAK_BYTES_PER_PIXEL = 8
PEAK_BYTES_PER_PIXEL_HIGH_BIT_GREY = 5
ACCEPTED_FORMATS = {"JPEG": "jpg", "PNG": "png", "WEBP": "webp", "HEIF": "jpg", "MPO": "jpg"}


class ImageRejected(ValueError):
    """An upload that is not an acceptable photo. str() is the user-facing reason."""

    def __init__(self, filename: str, reason: str):
        self.filename = filename
        self.reason = reason
        super().__init__(f"{filename}: {reason}")


@dataclass(frozen=True)
class CleanImage:
    content: bytes
    extension: str
    width: int
    height: int
    sha256: str
    source_format: str


def _mb(n: int) -> str:
    """Binary megabytes, as file managers show them: 25 * 1024 * 1024 -> '25'."""
    value = n / (1024 * 1024)
    return f"{value:.0f}" if value == int(value) else f"{value:.1f}"


def _to_srgb(rgb: Image.Image, icc_profile: bytes | None) -> Image.Image:
    """Apply an embedded colour profile (Display P3 from phones, CMYK press profiles
    already handled by the decoder) so the stored pixels are sRGB; the profile itself
    is then dropped with the rest of the metadata. Converts in place (no second copy)."""
    if not icc_profile or rgb.mode != "RGB":
        return rgb
    try:
        from PIL import ImageCms

        src = ImageCms.ImageCmsProfile(io.BytesIO(icc_profile))
        if (src.profile.xcolor_space or "").strip() != "RGB":
            return rgb
        ImageCms.profileToProfile(rgb, src, ImageCms.createProfile("sRGB"), outputMode="RGB", inPlace=True)
    except Exception:  # an unreadable profile must not hide a good photo
        pass
    return rgb


# Pillow modes with more than 8 bits per sample (16-bit grey PNG/TIFF scans, 32-bit int, float).
HIGH_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I", "F")
_STRIP_PIXELS = 1 << 18  # rows converted at a time: ~260 K pixels, about 4 MB of temporaries


def _high_bit_to_grey(img: Image.Image) -> Image.Image:
    """8-bit grey from a high-bit-depth image, a strip of rows at a time with integer
    arithmetic: the only full-size buffer is the 1-byte-per-pixel result (no float64
    copy of the image). 16-bit scales 0..65535 -> 0..255 rounded; 32-bit int the same
    when any value is above 255 (else as is); float stretches min..max to 0..255."""
    width, height = img.size
    lo, hi = img.getextrema()
    if img.mode == "F":
        span = float(hi - lo) or 1.0
    else:
        top = 65535 if img.mode.startswith("I;16") or hi > 255 else 255
    out = np.empty((height, width), dtype=np.uint8)
    rows = max(1, _STRIP_PIXELS // max(1, width))
    for y0 in range(0, height, rows):
        y1 = min(height, y0 + rows)
        strip = np.asarray(img.crop((0, y0, width, y1)))
        if img.mode == "F":
            scaled = (strip.astype(np.float32) - np.float32(lo)) * np.float32(255.0 / span)
            out[y0:y1] = np.clip(scaled, 0, 255).astype(np.uint8)
        else:  # round(v * 255 / top); 32-bit int may be negative or > 65535: clip first
            v = np.clip(strip, 0, top).astype(np.uint32)  # 65535 * 255 + 32767 < 2**32
            v *= 255
            v += top // 2
            v //= top
            out[y0:y1] = v
    return Image.fromarray(out, mode="L")


def _to_rgb(img: Image.Image) -> Image.Image:
    """Convert any Pillow mode to 8-bit RGB, compositing transparency on white."""
    mode = img.mode
    if mode == "RGB":
        return img
    if mode in HIGH_BIT_MODES:
        return _high_bit_to_grey(img).convert("RGB")
    if mode == "P":
        img = img.convert("RGBA") if "transparency" in img.info else img.convert("RGB")
        mode = img.mode
        if mode == "RGB":
            return img
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img if mode == "RGBA" else img.convert("RGBA")
        # Paste through the alpha band onto white: one RGB buffer, no RGBA copies.
        background = Image.new("RGB", rgba.size, (255, 255, 255))
        background.paste(rgba, mask=rgba)
        return background
    if mode == "CMYK":
        # JPEG CMYK from Adobe tools is stored inverted; Pillow's decoder undoes that.
        return img.convert("RGB")
    return img.convert("RGB")


_SIGNATURES = (
    (b"\xff\xd8\xff", "JPEG"),
    (b"\x89PNG\r\n\x1a\n", "PNG"),
    (b"GIF87a", "GIF"),
    (b"GIF89a", "GIF"),
    (b"%PDF", "PDF"),
)


def _unidentified_reason(data: bytes) -> str:
    """Why Pillow could not open the bytes, in words a person can act on."""
    head = data[:64]
    for magic, kind in _SIGNATURES:
        if head.startswith(magic):
            if kind in ("JPEG", "PNG"):
                return f"the file starts like a {kind} but is corrupt and cannot be decoded."
            return f"this is a {kind} file, not an image Derm Portal accepts (JPEG, PNG, WebP or HEIC)."
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "the file starts like a WebP but is corrupt and cannot be decoded."
    text = head.lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    if text.startswith((b"<svg", b"<?xml", b"<!doctype", b"<html", b"<")):
        return "this is not an image but a text/markup file (SVG or HTML); upload a JPEG, PNG, WebP or HEIC photo."
    return "this is not an image Derm Portal can read (JPEG, PNG, WebP or HEIC)."


def decode_checked(data: bytes, filename: str) -> tuple[Image.Image, str]:
    """The decoded image and its format, or ImageRejected saying why (size, pixel count, format,
    truncation). Every check ``clean_image`` makes before it converts; an import's check pass
    calls it alone so that no row is written before every photo is known to be readable."""
    max_bytes = settings.DERM_MAX_UPLOAD_BYTES
    max_pixels = settings.DERM_MAX_PIXELS
    if not data:
        raise ImageRejected(filename, "the file is empty.")
    if len(data) > max_bytes:
        raise ImageRejected(filename, f"the file is {_mb(len(data))} MB; the limit is {_mb(max_bytes)} MB.")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            probe = Image.open(io.BytesIO(data))
            fmt = probe.format or ""
            width, height = probe.size
            if width * height > max_pixels:
                raise ImageRejected(
                    filename,
                    f"the image is {width}x{height} = {width * height / 1e6:.0f} megapixels; "
                    f"the limit is {max_pixels / 1e6:.0f} megapixels (possible decompression bomb).",
                )
            if fmt not in ACCEPTED_FORMATS:
                raise ImageRejected(
                    filename, f"{fmt or 'this'} images are not accepted; upload JPEG, PNG, WebP or HEIC."
                )
            probe.verify()
            img = Image.open(io.BytesIO(data))
            img.load()
    except ImageRejected:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageRejected(
            filename, f"the image is larger than {max_pixels / 1e6:.0f} megapixels (possible decompression bomb)."
        )
    except UnidentifiedImageError:
        raise ImageRejected(filename, _unidentified_reason(data))
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise ImageRejected(filename, f"the image is truncated or corrupt ({exc}).")
    return img, fmt


def clean_image(data: bytes, filename: str) -> CleanImage:
    img, fmt = decode_checked(data, filename)

    # Each step rebinds `img`, so at most two full-size pixel buffers live at once
    # (PEAK_BYTES_PER_PIXEL): never keep a reference to an earlier stage here.
    icc_profile = img.info.get("icc_profile")
    with contextlib.suppress(Exception):  # a broken EXIF block must not hide a good photo
        ImageOps.exif_transpose(img, in_place=True)
    if img.mode in HIGH_BIT_MODES:
        img = _high_bit_to_grey(img)  # 2-4 bytes/pixel in, 1 out; the source is freed here
    rgb = _to_srgb(_to_rgb(img), icc_profile)
    del img
    # Pixels only: no EXIF/GPS, no JPEG comment, no ICC or text chunks. The JPEG and PNG
    # encoders take metadata from `info` (comment, icc_profile, transparency) and from
    # their own arguments only, so an empty `info` writes none (no copy of the pixels).
    rgb.info = {}
    out = io.BytesIO()
    if fmt in ("JPEG", "HEIF", "MPO"):
        rgb.save(out, format="JPEG", quality=95, subsampling=0, optimize=False)
        ext = "jpg"
    else:
        # Lossless sources stay lossless. Only pixels are written: no EXIF, no text chunks.
        rgb.save(out, format="PNG", compress_level=6)
        ext = "png"
    content = out.getvalue()
    return CleanImage(
        content=content,
        extension=ext,
        width=rgb.width,
        height=rgb.height,
        sha256=hashlib.sha256(content).hexdigest(),
        source_format=fmt,
    )


def read_upload(upload, filename: str) -> bytes:
    """Read an uploaded file, refusing to read more than the size limit (+1 byte)."""
    limit = settings.DERM_MAX_UPLOAD_BYTES
    size = getattr(upload, "size", None)
    if size is not None and size > limit:
        raise ImageRejected(filename, f"the file is {_mb(size)} MB; the limit is {_mb(limit)} MB.")
    if hasattr(upload, "seek"):
        upload.seek(0)
    data = upload.read(limit + 1)
    if len(data) > limit:
        raise ImageRejected(filename, f"the file is over the limit of {_mb(limit)} MB.")
    return data
