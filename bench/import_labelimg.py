"""Benchmark: import a labelImg folder (generated images + Pascal VOC XML boxes).

    .venv/bin/python bench/import_labelimg.py [--photos 500] [--size 1024x768]

Builds a throw-away SQLite portal in a temporary folder (never touches var/), writes
N synthetic lesion photos with 1-3 boxes each as labelImg XML, then times
  1. the import that creates a case per photo (decode, clean, store the photo + boxes),
  2. a second import of the same XML onto the photos now in the portal (boxes only).
Target from issue #5: under one minute for >= 500 photos.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def make_folder(folder: Path, n: int, size: tuple[int, int], seed: int = 0) -> int:
    from PIL import Image, ImageDraw, ImageFilter

    rng = random.Random(seed)
    labels = ["nv", "mel", "bkl", "bcc", "akiec", "df", "vasc", "melanocytic"]
    n_boxes = 0
    w, h = size
    for i in range(n):
        img = Image.new("RGB", size, (rng.randint(180, 230), rng.randint(130, 170), rng.randint(100, 140)))
        draw = ImageDraw.Draw(img)
        objs = []
        for _ in range(rng.randint(1, 3)):
            bw, bh = rng.randint(w // 10, w // 3), rng.randint(h // 10, h // 3)
            x0, y0 = rng.randint(0, w - bw), rng.randint(0, h - bh)
            draw.ellipse(
                [x0, y0, x0 + bw, y0 + bh], fill=(rng.randint(60, 140), rng.randint(30, 80), rng.randint(20, 60))
            )
            objs.append((rng.choice(labels), x0, y0, x0 + bw, y0 + bh))
        img = img.filter(ImageFilter.GaussianBlur(1.5))
        img.save(folder / f"lesion_{i:05d}.jpg", "JPEG", quality=88)
        body = "".join(
            f"\n\t<object>\n\t\t<name>{lab}</name>\n\t\t<pose>Unspecified</pose>\n\t\t<truncated>0</truncated>\n"
            f"\t\t<difficult>0</difficult>\n\t\t<bndbox>\n\t\t\t<xmin>{a}</xmin>\n\t\t\t<ymin>{b}</ymin>\n"
            f"\t\t\t<xmax>{c}</xmax>\n\t\t\t<ymax>{d}</ymax>\n\t\t</bndbox>\n\t</object>"
            for lab, a, b, c, d in objs
        )
        (folder / f"lesion_{i:05d}.xml").write_text(
            f"<annotation>\n\t<folder>bench</folder>\n\t<filename>lesion_{i:05d}.jpg</filename>\n"
            f"\t<path>lesion_{i:05d}.jpg</path>\n\t<source>\n\t\t<database>Unknown</database>\n\t</source>\n"
            f"\t<size>\n\t\t<width>{w}</width>\n\t\t<height>{h}</height>\n\t\t<depth>3</depth>\n\t</size>\n"
            f"\t<segmented>0</segmented>{body}\n</annotation>\n"
        )
        n_boxes += len(objs)
    return n_boxes


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--photos", type=int, default=500)
    ap.add_argument("--size", default="1024x768", help="photo size WxH")
    args = ap.parse_args()
    size = tuple(int(v) for v in args.size.lower().split("x"))

    tmp = Path(tempfile.mkdtemp(prefix="derm-bench-labelimg-"))
    os.environ["DERM_VAR_DIR"] = str(tmp / "var")
    os.environ.pop("DATABASE_URL", None)
    os.environ["DJANGO_SETTINGS_MODULE"] = "derm_portal.settings.base"
    os.environ.setdefault("DJANGO_LOG_LEVEL", "WARNING")
    import django

    django.setup()
    from django.contrib.auth import get_user_model
    from django.core.management import call_command

    from annotation.interchange import voc
    from annotation.models import Box, Photo
    from annotation.services import taxonomy_load_default
    from derm_portal import roles

    call_command("migrate", verbosity=0)
    taxonomy_load_default()
    roles.ensure_groups()
    admin = get_user_model().objects.create_user("bench-admin", password="x")
    from django.contrib.auth.models import Group

    admin.groups.add(Group.objects.get(name=roles.ADMIN))

    folder = tmp / "labelimg"
    folder.mkdir()
    t0 = time.perf_counter()
    n_boxes = make_folder(folder, args.photos, size)
    t_gen = time.perf_counter() - t0
    mb = sum(p.stat().st_size for p in folder.iterdir()) / 1e6
    print(f"generated {args.photos} photos {size[0]}x{size[1]} + XML ({n_boxes} boxes, {mb:.1f} MB) in {t_gen:.1f} s")

    t0 = time.perf_counter()
    rep = voc.voc_import_folder(folder=folder, user=admin, create_cases=True, patient_prefix="BENCH-")
    t_create = time.perf_counter() - t0
    assert not rep.errors, rep.errors[:3]
    assert Photo.objects.count() == args.photos and Box.objects.count() == n_boxes
    print(
        f"import with case creation: {rep.summary()} in {t_create:.1f} s "
        f"({args.photos / t_create:.0f} photos/s) -> {'PASS' if t_create < 60 else 'FAIL'} (< 60 s)"
    )

    t0 = time.perf_counter()
    rep = voc.voc_import_folder(folder=folder, user=admin)
    t_boxes = time.perf_counter() - t0
    assert not rep.errors and Box.objects.count() == n_boxes
    print(f"re-import onto existing photos: {rep.summary()} in {t_boxes:.1f} s ({args.photos / t_boxes:.0f} photos/s)")
    import shutil

    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
