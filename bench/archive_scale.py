"""An archive of N photos in bounded memory: cache build rate, one epoch's photos/s and the run's peak RSS.

    .venv/bin/python bench/archive_scale.py --source HAM10000_DIR --n 20000 [--image-size 224]
        [--photo-px 320] [--max-train-images 2000] [--holdout 0.2] [--workdir DIR] [--repo DIR]

Builds a synthetic archive of ``--n`` photos from the shared ones (each a random crop of a random
source photo, flipped, with its brightness, contrast and saturation changed, re-encoded as JPEG, so
every file is distinct) in a temporary directory (never committed; removed afterwards unless
``--workdir`` is given), then runs one training in a child process, as a site would
(``python -m inference.ml train``, 1 fine + 1 coarse epoch, the default recipe otherwise; the fine
epoch on ``--max-train-images`` photos so that it fits a shared CPU), and prints the cache build rate
(every photo of the archive decoded into the disk cache), the fine epoch's photos/s and the child's
peak resident memory. ``--repo`` runs another checkout of the engine on the same archive (before/after).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from PIL import Image, ImageEnhance, ImageOps

REPO = Path(__file__).resolve().parents[1]


def _sources(src: Path) -> list[tuple[Path, str]]:
    """(photo, label) of a HAM10000-style (metadata.csv) or generic (labels.csv) directory."""
    if (src / "metadata.csv").is_file():
        with open(src / "metadata.csv", newline="") as f:
            return [(src / "images" / f"{r['image_id']}.jpg", r["dx"]) for r in csv.DictReader(f)]
    with open(src / "labels.csv", newline="") as f:
        return [(src / "images" / r["image"], r["label"]) for r in csv.DictReader(f)]


def make_archive(src: Path, out: Path, n: int, px: int, seed: int = 0, workers: int = 2) -> float:
    """Write ``n`` distinct photos and labels.csv (each photo its own case); returns the seconds taken."""
    photos = _sources(src)
    (out / "images").mkdir(parents=True, exist_ok=True)
    t0 = time.time()

    def one(k: int) -> tuple[str, str, str]:
        rng = random.Random(seed * 1_000_003 + k)
        path, label = photos[rng.randrange(len(photos))]
        with Image.open(path) as im:
            im.draft("RGB", (2 * px, 2 * px))
            im = ImageOps.exif_transpose(im).convert("RGB")
            w, h = im.size
            s = rng.uniform(0.6, 1.0)
            cw, ch = int(w * s), int(h * s)
            x0, y0 = rng.randrange(w - cw + 1), rng.randrange(h - ch + 1)
            im = im.crop((x0, y0, x0 + cw, y0 + ch)).resize((px, round(px * ch / cw)), Image.BILINEAR)
            if rng.random() < 0.5:
                im = ImageOps.mirror(im)
            if rng.random() < 0.5:
                im = ImageOps.flip(im)
            for enh in (ImageEnhance.Brightness, ImageEnhance.Contrast, ImageEnhance.Color):
                im = enh(im).enhance(rng.uniform(0.85, 1.15))
            name = f"syn_{k:07d}.jpg"
            im.save(out / "images" / name, quality=rng.randint(85, 95))
        return name, label, f"case_{k:07d}"

    rows = []
    with ThreadPoolExecutor(workers) as ex:
        for i, row in enumerate(ex.map(one, range(n), chunksize=64)):
            rows.append(row)
            if (i + 1) % 2000 == 0 or i + 1 == n:
                el = time.time() - t0
                print(
                    f"  archive: {i + 1:,}/{n:,} photos, {(i + 1) / el:.0f}/s, {(n - i - 1) * el / (i + 1):.0f} s left",
                    file=sys.stderr,
                    flush=True,
                )
    with open(out / "labels.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["image", "label", "case_id"])
        w.writerows(rows)
    return time.time() - t0


def _rss_by_phase(child: subprocess.Popen, log_path: Path) -> dict[str, float]:
    """Wait for ``child``, sampling its resident memory every 0.5 s; the highest MB seen in each phase
    of the run, named by the ``[stage]`` tag of the last progress line it had written."""
    peaks: dict[str, float] = {}
    while child.poll() is None:
        try:
            kb = next(int(x.split()[1]) for x in open(f"/proc/{child.pid}/status") if x.startswith("VmRSS:"))
        except (OSError, StopIteration):
            break
        with open(log_path, "rb") as f:
            f.seek(max(0, f.seek(0, 2) - 400))
            lines = f.read().decode(errors="replace").replace("\r", "\n").split("\n")
        last = next((x for x in reversed(lines) if x.startswith("[")), "[start]")
        phase = last[1 : last.find("]")] if "]" in last else "start"
        peaks[phase] = max(peaks.get(phase, 0.0), round(kb / 1024, 1))
        time.sleep(0.5)
    child.wait()
    return peaks


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--source", required=True, help="a HAM10000-style or generic data set to draw photos from")
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--photo-px", type=int, default=320, help="width of every generated photo")
    ap.add_argument("--image-size", type=int, default=224)
    ap.add_argument("--max-train-images", type=int, default=2000, help="photos of the fine epoch (0: all)")
    ap.add_argument("--holdout", type=float, default=0.2, help="share of cases evaluated after training")
    ap.add_argument("--taxonomy", default=str(REPO / "inference/ml/taxonomies/ham10000.json"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--workdir", default=None, help="keep the archive, cache and artefact here")
    ap.add_argument("--repo", default=str(REPO), help="checkout whose engine trains (default: this one)")
    a = ap.parse_args(argv)
    work = Path(a.workdir) if a.workdir else Path(tempfile.mkdtemp(prefix="archive_scale_"))
    try:
        data = work / "archive"
        if (data / "labels.csv").is_file():
            print(f"archive: reusing {data}", file=sys.stderr)
            gen_s = None
        else:
            gen_s = make_archive(Path(a.source), data, a.n, a.photo_px)
        out = work / f"model_{time.time_ns()}"
        cmd = [
            sys.executable,
            "-m",
            "inference.ml",
            "train",
            "--data",
            str(data),
            "--taxonomy",
            a.taxonomy,
            "--out",
            str(out),
            "--image-size",
            str(a.image_size),
            "--epochs",
            "1",
            "--coarse-epochs",
            "1",
            "--threads",
            str(a.threads),
            "--cache-dir",
            str(work / "cache"),
            "--holdout",
            str(a.holdout),
            "--device",
            "cpu",
        ]
        if a.max_train_images:
            cmd += ["--max-train-images", str(a.max_train_images)]
        if Path(a.repo).resolve() != REPO:
            cmd.remove("--device"), cmd.remove("cpu")  # an engine from before --device
        t0 = time.time()
        log_path = work / f"{out.name}.log"
        with open(log_path, "w") as log:
            child = subprocess.Popen(
                cmd, cwd=a.repo, env={**os.environ, "PYTHONPATH": a.repo}, stdout=subprocess.DEVNULL, stderr=log
            )
            by_phase = _rss_by_phase(child, log_path)
        wall = time.time() - t0
        peak_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        if child.returncode != 0:
            print(log_path.read_text()[-4000:], file=sys.stderr)
            return child.returncode
        man = json.loads((out / "model.json").read_text())
        n_img, cache_s = man["data"]["n_images"], man["timings_seconds"]["cache"]
        res = {
            "command": " ".join(["bench/archive_scale.py", *(argv if argv is not None else sys.argv[1:])]),
            "photos": n_img,
            "image_size": a.image_size,
            "archive_seconds": gen_s,
            "cache_build_seconds": round(cache_s, 1),
            "cache_build_photos_per_second": round(n_img / cache_s, 1) if cache_s > 1 else None,  # None: reused
            "fine_epoch_photos": man["data"]["n_train"],
            "fine_epoch_photos_per_second": round(man["train_images_per_second"]["fine"], 2),
            "training_wall_seconds": round(wall, 1),
            "peak_rss_mb": round(peak_kb / 1024, 1),
            "peak_rss_mb_by_phase": by_phase,
            "cache_file_mb": round(sum(f.stat().st_size for f in (work / "cache").glob("*.u8")) / 2**20, 1),
        }
        print(json.dumps(res, indent=2))
        return 0
    finally:
        if not a.workdir:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
