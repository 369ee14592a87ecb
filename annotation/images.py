"""Decode every upload before accepting it.

`clean_image` takes the raw bytes of an upload and returns RGB pixels re-encoded
without any metadata (EXIF orientation applied first, then EXIF/GPS dropped), or raises
`ImageRejected` with a message a person can act on. Nothing is written here.
"""
from __future__ import annotations

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
    is then dropped with the rest of the metadata."""
    if not icc_profile or rgb.mode != "RGB":
        return rgb
    try:
        from PIL import ImageCms

        src = ImageCms.ImageCmsProfile(io.BytesIO(icc_profile))
        if (src.profile.xcolor_space or "").strip() != "RGB":
            return rgb
        return ImageCms.profileToProfile(rgb, src, ImageCms.createProfile("sRGB"), outputMode="RGB") or rgb
    except Exception:  # an unreadable profile must not hide a good photo
        return rgb


def _to_rgb(img: Image.Image) -> Image.Image:
    """Convert any Pillow mode to 8-bit RGB, compositing transparency on white."""
    mode = img.mode
    if mode == "RGB":
        return img
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        arr = np.asarray(img, dtype=np.float64)
        hi = 65535.0 if mode.startswith("I;16") or arr.max() > 255 else 255.0
        arr8 = np.clip(np.round(arr / hi * 255.0), 0, 255).astype(np.uint8)
        return Image.fromarray(arr8, mode="L").convert("RGB")
    if mode == "F":
        arr = np.asarray(img, dtype=np.float64)
        span = float(arr.max() - arr.min()) or 1.0
        return Image.fromarray(((arr - arr.min()) / span * 255).astype(np.uint8), "L").convert("RGB")
    if mode == "P":
        img = img.convert("RGBA") if "transparency" in img.info else img.convert("RGB")
        mode = img.mode
        if mode == "RGB":
            return img
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
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


def clean_image(data: bytes, filename: str) -> CleanImage:
    max_bytes = settings.DERM_MAX_UPLOAD_BYTES
    max_pixels = settings.DERM_MAX_PIXELS
    if not data:
        raise ImageRejected(filename, "the file is empty.")
    if len(data) > max_bytes:
        raise ImageRejected(
            filename, f"the file is {_mb(len(data))} MB; the limit is {_mb(max_bytes)} MB."
        )
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
        raise ImageRejected(filename, f"the image is larger than {max_pixels / 1e6:.0f} megapixels (possible decompression bomb).")
    except UnidentifiedImageError:
        raise ImageRejected(filename, _unidentified_reason(data))
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise ImageRejected(filename, f"the image is truncated or corrupt ({exc}).")

    try:
        img = ImageOps.exif_transpose(img)
    except Exception:  # a broken EXIF block must not hide a good photo
        pass
    rgb = _to_srgb(_to_rgb(img), img.info.get("icc_profile"))
    # A fresh image carries pixels only: no EXIF/GPS, no JPEG comment, no ICC or text
    # chunks (Pillow would otherwise copy `info["comment"]` into the saved JPEG).
    rgb = Image.frombytes("RGB", rgb.size, rgb.tobytes())
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
