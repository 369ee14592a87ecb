"""Peak memory and time of cleaning one upload (annotation.images.clean_image), for a
generated large image: by default a 59.5-megapixel 16-bit grey PNG (9440 x 6300, about
135 KB on disk, under the 60 MP pixel limit).

    .venv/bin/python bench/upload_memory.py [--kind grey16|rgb48|rgba|jpeg] [--width W --height H] [--json]

Each measurement runs in a fresh Python process: after a warm-up on a small image the
kernel's high-water mark is reset (/proc/self/clear_refs), the upload is cleaned, and the
peak resident set size above the resident size just before is printed with the time.
The bound it is checked against (tests/test_upload_memory.py) is
annotation.images.PEAK_BYTES_PER_PIXEL bytes per pixel (5 for 16-bit grey) plus SLACK_BYTES.

Measured at 59.5 MP on the busy 2-core dev machine (--kind all): 16-bit grey PNG +283 MB in
3.8 s (bound 348 MB; through float64 it took +1,476 MB and 12.4 s), 16-bit RGB PNG +228 MB,
RGBA PNG +454 MB (bound 518 MB), JPEG +230 MB in 1.4 s.
"""

from __future__ import annotations

import argparse
import json
import os
import struct
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_SIZE = (9440, 6300)  # 59,472,000 pixels


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def write_png(path: Path, width: int, height: int, kind: str = "grey16") -> None:
    """A PNG written row by row (never the whole image in memory): a smooth gradient.
    grey16: 16-bit grey; rgb48: 16-bit RGB; rgba: 8-bit RGBA with varying alpha."""
    colour, depth, samples = {"grey16": (0, 16, 1), "rgb48": (2, 16, 3), "rgba": (6, 8, 4)}[kind]
    if kind == "grey16":
        row = b"".join(struct.pack(">H", (x * 65535) // max(1, width - 1)) for x in range(width))
    elif depth == 16:  # steps of 64 pixels: compresses within zlib's window like a real scan's flat areas
        row = b"".join(
            struct.pack(">HHH", (x // 64 * 997) % 65536, 30000, (x // 64 * 331) % 65536) for x in range(width)
        )
    else:
        row = b"".join(bytes(((x // 64) % 256, 90, 200, (x // 64 * 37) % 256)) for x in range(width))
    comp = zlib.compressobj(9)
    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, depth, colour, 0, 0, 0)))
        parts = [comp.compress(b"\0" + row) for _ in range(height)]
        parts.append(comp.flush())
        f.write(_chunk(b"IDAT", b"".join(parts)))
        f.write(_chunk(b"IEND", b""))


def write_jpeg(path: Path, width: int, height: int) -> None:
    from PIL import Image

    Image.linear_gradient("L").resize((width, height)).convert("RGB").save(path, "JPEG", quality=90)


def _status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def measure_in_this_process(path: Path) -> dict:
    """Clean the file once; peak RSS above the RSS just before, in MB, and seconds."""
    import django

    django.setup()
    from annotation import images
    from annotation.images import clean_image

    data = path.read_bytes()
    small = tempfile.NamedTemporaryFile(suffix=".png", delete=False)
    small.close()
    write_png(Path(small.name), 64, 48, "grey16")
    clean_image(Path(small.name).read_bytes(), "warm-up.png")  # imports and first-use allocations
    os.unlink(small.name)
    Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
    before = _status_kb("VmRSS")
    t0 = time.perf_counter()
    clean = clean_image(data, path.name)
    seconds = time.perf_counter() - t0
    peak = _status_kb("VmHWM")
    pixels = clean.width * clean.height
    return {
        "file": path.name,
        "file_kb": round(len(data) / 1024),
        "width": clean.width,
        "height": clean.height,
        "megapixels": round(pixels / 1e6, 1),
        "stored_kb": round(len(clean.content) / 1024),
        "peak_rss_delta_mb": round((peak - before) / 1024, 1),
        "seconds": round(seconds, 2),
        "bound_mb": round(bound_bytes(images, path.name.startswith("grey16"), pixels) / 2**20, 1),
    }


def bound_bytes(images_module, high_bit_grey: bool, pixels: int) -> int:
    """The stated bound for one upload of `pixels` decoded pixels."""
    per_pixel = (
        images_module.PEAK_BYTES_PER_PIXEL_HIGH_BIT_GREY if high_bit_grey else images_module.PEAK_BYTES_PER_PIXEL
    )
    return per_pixel * pixels + SLACK_BYTES


SLACK_BYTES = 64 * 2**20  # allocator arenas, zlib/JPEG codec state, the upload and encoded output of a small file


def measure(path: Path) -> dict:
    """Run measure_in_this_process in a fresh interpreter (a clean high-water mark)."""
    env = dict(os.environ, DJANGO_SETTINGS_MODULE=os.environ.get("DJANGO_SETTINGS_MODULE", "derm_portal.settings.test"))
    env.setdefault("DERM_VAR_DIR", tempfile.mkdtemp(prefix="derm-bench-var-"))
    code = f"import json, sys; sys.path.insert(0, {str(REPO)!r}); from bench.upload_memory import measure_in_this_process as m; from pathlib import Path; print(json.dumps(m(Path({str(path)!r}))))"
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"measurement failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def make(kind: str, width: int, height: int, folder: Path) -> Path:
    path = folder / (f"{kind}-{width}x{height}." + ("jpg" if kind == "jpeg" else "png"))
    if kind == "jpeg":
        write_jpeg(path, width, height)
    else:
        write_png(path, width, height, kind)
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--kind", default="grey16", choices=["grey16", "rgb48", "rgba", "jpeg", "all"])
    ap.add_argument("--width", type=int, default=DEFAULT_SIZE[0])
    ap.add_argument("--height", type=int, default=DEFAULT_SIZE[1])
    ap.add_argument("--json", action="store_true", help="one JSON object per line")
    args = ap.parse_args()
    kinds = ["grey16", "rgb48", "rgba", "jpeg"] if args.kind == "all" else [args.kind]
    with tempfile.TemporaryDirectory(prefix="derm-upload-mem-") as tmp:
        for kind in kinds:
            result = measure(make(kind, args.width, args.height, Path(tmp)))
            result["kind"] = kind
            if args.json:
                print(json.dumps(result))
            else:
                print(
                    f"{kind:7s} {result['megapixels']} MP, file {result['file_kb']} KB: peak RSS +{result['peak_rss_delta_mb']} MB "
                    f"(bound {result['bound_mb']} MB), {result['seconds']} s, stored {result['stored_kb']} KB"
                )


if __name__ == "__main__":
    main()
