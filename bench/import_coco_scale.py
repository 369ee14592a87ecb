"""Benchmark: COCO box import time as the file grows (it must grow linearly).

    .venv/bin/python bench/import_coco_scale.py [--sizes 2000,8000,50000,100000] [--matched 200]

Builds a throw-away SQLite portal in a temporary folder (never touches var/) with --matched
small photos, then imports generated COCO files of each size: one box per image, the
--matched images naming portal photos and all others naming files the portal does not
have (the shape of a hostile file: every unmatched annotation used to scan every image).
Prints seconds, images per second and the process's peak memory after each size.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def coco_doc(n: int, matched: list[str]) -> bytes:
    images = [{"id": i, "file_name": f"missing-{i}.jpg", "width": 64, "height": 48} for i in range(1, n + 1)]
    step = max(1, n // max(1, len(matched)))
    for k, name in enumerate(matched[:n]):
        images[k * step]["file_name"] = name
    anns = [{"id": i, "image_id": i, "category_id": 1, "bbox": [4, 4, 20, 16]} for i in range(1, n + 1)]
    return json.dumps(
        {"images": images, "annotations": anns, "categories": [{"id": 1, "name": "nv"}]}, indent=1
    ).encode()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="2000,8000,50000,100000")
    ap.add_argument("--matched", type=int, default=200)
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="derm-bench-coco-"))
    os.environ["DERM_VAR_DIR"] = str(tmp / "var")
    os.environ.pop("DATABASE_URL", None)
    os.environ["DJANGO_SETTINGS_MODULE"] = "derm_portal.settings.base"
    os.environ.setdefault("DJANGO_LOG_LEVEL", "WARNING")
    import django

    django.setup()
    from django.contrib.auth import get_user_model
    from django.contrib.auth.models import Group
    from django.core.management import call_command
    from PIL import Image

    from annotation import services
    from annotation.interchange.coco import coco_import
    from derm_portal import roles

    call_command("migrate", verbosity=0)
    services.taxonomy_load_default()
    roles.ensure_groups()
    admin = get_user_model().objects.create_user("bench-admin", password="x")
    admin.groups.add(Group.objects.get(name=roles.ADMIN))
    names = []
    for k in range(args.matched):
        buf = io.BytesIO()
        Image.new("RGB", (64, 48), (k % 256, (7 * k) % 256, 90)).save(buf, "PNG")
        case = services.case_create(patient_code=f"COCO-{k}", created_by=admin)
        names.append(
            services.photo_attach(
                case=case, data=buf.getvalue(), filename=f"lesion-{k}.png", run_hooks=False
            ).original_name
        )

    print(f"{'images':>8} {'MB':>6} {'seconds':>8} {'images/s':>9} {'boxes':>6} {'problems':>9} {'peak RSS MB':>12}")
    for n in (int(v) for v in args.sizes.split(",")):
        data = coco_doc(n, names)
        t0 = time.perf_counter()
        rep = coco_import(data=data, source=f"bench-{n}.json", user=admin)
        dt = time.perf_counter() - t0
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(
            f"{n:>8} {len(data) / 1e6:>6.1f} {dt:>8.2f} {n / dt:>9.0f} {rep.boxes:>6} {rep.n_errors:>9} {peak:>12.0f}"
        )
    import shutil

    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
