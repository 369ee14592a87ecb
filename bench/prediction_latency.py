"""Photo upload -> ranked differential + Grad-CAM overlays stored, with a real Celery worker.

    python bench/prediction_latency.py [MODEL_DIR] [--n 20] [--data DIR]
        [--database postgres://postgres@127.0.0.1:5432/derm_bench_latency] [--redis redis://127.0.0.1:6379/7]

Sets up its own PostgreSQL database and Redis DB number (so it never meets other workers), registers
and activates MODEL_DIR (default: a freshly initialised EfficientNet-Lite0 artefact in /tmp; timing
does not depend on trained weights), starts `celery worker -Q interactive --pool solo` (one process:
the predictor is loaded once), then for each photo POSTs it to the case page's upload endpoint (the
same view the drop zone uses; the photo hook enqueues the prediction after commit) and polls the
database until the prediction is done with its 4 overlays. Prints p50/p95 of:
  total    upload request start -> prediction done with overlays stored
  upload   the upload request itself (decode, EXIF clean, store, enqueue)
  queue    prediction row created -> worker picked it up
  worker   worker time (load photo, differential, Grad-CAM, overlays)
Target: total p50 < 1 s on this 2-core CPU. /proc/loadavg is printed: other processes share the CPU.
"""

import argparse
import io
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model", nargs="?")
    ap.add_argument("--n", type=int, default=20)
    ap.add_argument("--data", default=None, help="data dir with images/*.jpg (default: generated photos)")
    ap.add_argument("--database", default="postgres://postgres@127.0.0.1:5432/derm_bench_latency")
    ap.add_argument("--redis", default="redis://127.0.0.1:6379/7")
    ap.add_argument("--var", default=str(Path(tempfile.gettempdir()) / "derm-bench-latency-var"))
    ap.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch threads of the worker (DERM_INFERENCE_THREADS; default: the setting's default, 1; 0 = torch default)",
    )
    args = ap.parse_args()

    from _artefact import fresh_lite0_artefact, loadavg, pct, sample_images

    model_dir = (
        Path(args.model).resolve()
        if args.model
        else fresh_lite0_artefact(Path(tempfile.gettempdir()) / "derm-bench-lite0-fresh")
    )
    env = {
        "DJANGO_SETTINGS_MODULE": "derm_portal.settings.base",
        "DATABASE_URL": args.database,
        "CELERY_BROKER_URL": args.redis,
        "CELERY_TASK_ALWAYS_EAGER": "0",
        "DERM_VAR_DIR": args.var,
        "DJANGO_LOG_LEVEL": "WARNING",
        "DJANGO_DEBUG": "0",
    }
    if args.threads is not None:
        env["DERM_INFERENCE_THREADS"] = str(args.threads)
    os.environ.update(env)
    Path(args.var).mkdir(parents=True, exist_ok=True)
    _create_database(args.database)

    import django

    django.setup()
    from django.contrib.auth import get_user_model
    from django.core.files.uploadedfile import SimpleUploadedFile
    from django.core.management import call_command
    from django.test import Client
    from django.urls import reverse

    from annotation.services import case_create, taxonomy_load_default
    from derm_portal import roles
    from inference import services
    from inference.models import Prediction, PredictionStatus

    call_command("migrate", verbosity=0)
    roles.ensure_groups()
    taxonomy_load_default()
    mv = services.model_register(model_dir=model_dir, name=f"bench {model_dir.name}")
    services.model_activate(model_version=mv, by=None, note="bench", reason="benchmark")
    User = get_user_model()
    doc, _ = User.objects.get_or_create(username="bench-doc")
    from django.contrib.auth.models import Group

    doc.groups.add(Group.objects.get(name=roles.DERMATOLOGIST))
    case = case_create(patient_code=f"BENCH-{int(time.time())}", created_by=doc)
    client = Client()
    client.force_login(doc)
    url = reverse("annotation:photo_upload", args=[case.pk])

    worker = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "celery"),
            "-A",
            "derm_portal",
            "worker",
            "-Q",
            "interactive",
            "--pool",
            "solo",
            "-l",
            "WARNING",
            "-n",
            f"bench-latency-{os.getpid()}@%h",
        ],
        cwd=ROOT,
        env={**os.environ, **env},
        stdout=subprocess.DEVNULL,
        stderr=open(Path(args.var) / "worker.log", "w"),
    )
    try:
        from derm_portal.celery import app

        t0 = time.time()
        while not app.control.ping(timeout=1.0):
            if worker.poll() is not None or time.time() - t0 > 90:
                raise SystemExit(f"worker did not start; see {args.var}/worker.log")
        imgs = sample_images(args.data, args.n + 1)

        def one(img, name):
            buf = io.BytesIO()
            img.save(buf, "JPEG", quality=92)
            t = time.perf_counter()
            r = client.post(
                url,
                {"photos": SimpleUploadedFile(name, buf.getvalue(), "image/jpeg"), "modality": "clinical"},
                HTTP_ACCEPT="application/json",
            )
            t_up = time.perf_counter()
            assert r.status_code == 201, r.content
            photo_pk = r.json()["stored"][0]["id"]
            while True:
                p = Prediction.objects.filter(photo_id=photo_pk).first()
                if (
                    p is not None
                    and p.status in (PredictionStatus.DONE, PredictionStatus.FAILED)
                    and (p.status == PredictionStatus.FAILED or p.overlays.count() == 4)
                ):
                    break
                time.sleep(0.005)
            t_done = time.perf_counter()
            assert p.status == PredictionStatus.DONE, p.error
            return {
                "total": (t_done - t) * 1000,
                "upload": (t_up - t) * 1000,
                "queue": (p.started_at - p.created_at).total_seconds() * 1000,
                "worker": p.duration_ms,
            }

        first = one(imgs[0], "warmup.jpg")  # the worker loads the model here
        print(
            f"model {model_dir.name} ({mv.manifest.get('backbone')}, {mv.manifest['preprocessing']['size']} px), "
            f"worker torch threads {'setting default (1)' if args.threads is None else args.threads or 'torch default'}; "
            f"first photo {first['total']:.0f} ms; load {loadavg()}"
        )
        rows = [one(img, f"p{i}.jpg") for i, img in enumerate(imgs[1:])]
        print(f"{len(rows)} photos, one at a time")
        print(f"{'':8s} {'p50 ms':>8s} {'p95 ms':>8s}")
        for k in ("total", "upload", "queue", "worker"):
            v = [r[k] for r in rows]
            print(f"{k:8s} {pct(v, 50):8.0f} {pct(v, 95):8.0f}")
        print(f"load after {loadavg()}")
    finally:
        worker.send_signal(signal.SIGTERM)
        try:
            worker.wait(timeout=20)
        except subprocess.TimeoutExpired:
            worker.kill()


def _create_database(url: str):
    if not url.startswith("postgres"):
        return
    import psycopg

    base, name = url.rsplit("/", 1)
    with psycopg.connect(base + "/postgres", autocommit=True) as conn:
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone():
            conn.execute(f'CREATE DATABASE "{name}"')


if __name__ == "__main__":
    main()
