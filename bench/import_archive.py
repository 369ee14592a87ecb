"""Import a large photo archive into PostgreSQL: time, rate and the importer's peak memory, and a resume.

    .venv/bin/python bench/import_archive.py --source HAM10000_DIR --n 100000 [--workdir DIR]
        [--interrupt-after SECONDS] [--database-url URL] [--keep]

Builds (or, with ``--workdir``, reuses) the synthetic archive of ``bench/archive_scale.py`` (``--n``
distinct photos, each its own case, labels.csv), creates a throw-away database on the server of
``--database-url`` (default $DATABASE_URL or postgres://postgres@127.0.0.1:5432/test) and runs
``manage.py import_dataset`` on it in a child process, as an operator would, printing its wall time,
rows/s and peak resident memory. With ``--interrupt-after S`` the first import is killed (SIGKILL)
after S seconds and run again: the second run must resume (add only what the first did not commit)
and end with every photo stored once (a SIGKILL in the middle of a chunk leaves the files that chunk
had stored: counted as orphan files, then removed with ``manage.py sweep_files --delete``). The database
and stored photos are removed unless ``--keep``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
import _scratch_db
from archive_scale import make_archive


def _run(cmd, env, kill_after: float | None = None) -> tuple[int, float, float, str]:
    """Run a child (its progress on our stderr); (exit code, wall seconds, its peak RSS in MB, stdout).
    Killed with SIGKILL after ``kill_after`` seconds when given."""
    t0 = time.time()
    with tempfile.TemporaryFile("w+") as log:
        p = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=log)
        while True:
            pid, status, usage = os.wait4(p.pid, os.WNOHANG)
            if pid:
                break
            if kill_after is not None and time.time() - t0 > kill_after:
                os.kill(p.pid, signal.SIGKILL)
                _, status, usage = os.wait4(p.pid, 0)
                break
            time.sleep(0.2)
        p.returncode = os.waitstatus_to_exitcode(status)
        log.seek(0)
        return p.returncode, time.time() - t0, usage.ru_maxrss / 1024, log.read()


def _count(env, sql: str) -> int:
    import psycopg

    with psycopg.connect(env["DATABASE_URL"]) as conn:
        return conn.execute(sql).fetchone()[0]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--source", required=True, help="a HAM10000-style or generic data set to draw photos from")
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--photo-px", type=int, default=320)
    ap.add_argument("--workdir", default=None, help="keep (and reuse) the archive here")
    ap.add_argument("--interrupt-after", type=float, default=None, help="kill the first import after S seconds")
    ap.add_argument("--database-url", default=os.environ.get("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/test"))
    ap.add_argument("--keep", action="store_true", help="keep the database and stored photos")
    a = ap.parse_args(argv)

    work = Path(a.workdir) if a.workdir else Path(tempfile.mkdtemp(prefix="import_archive_"))
    data = work / "archive"
    if not (data / "labels.csv").is_file():
        make_archive(Path(a.source), data, a.n, a.photo_px)
    name = f"derm_bench_archive_{os.getpid()}"
    var_dir = Path(tempfile.mkdtemp(prefix="derm-bench-archive-var-", dir=work))
    env = {
        **os.environ,
        "DATABASE_URL": _scratch_db.create(a.database_url, name),
        "DERM_VAR_DIR": str(var_dir),
        "DJANGO_SETTINGS_MODULE": "derm_portal.settings.base",
        "DJANGO_LOG_LEVEL": "WARNING",
    }
    for k in ("DERM_MEDIA_ROOT", "DERM_S3_BUCKET"):
        env.pop(k, None)
    manage = [sys.executable, "manage.py"]
    try:
        subprocess.run([*manage, "migrate", "--noinput", "-v", "0"], cwd=REPO, env=env, check=True)
        subprocess.run([*manage, "load_taxonomy"], cwd=REPO, env=env, check=True, stdout=subprocess.DEVNULL)
        rows = sum(1 for _ in open(data / "labels.csv")) - 1
        runs = []
        for k, kill in enumerate([a.interrupt_after, None] if a.interrupt_after else [None]):
            before = _count(env, "select count(*) from annotation_photo")
            rc, wall, peak, out = _run([*manage, "import_dataset", str(data)], env, kill_after=kill)
            after = _count(env, "select count(*) from annotation_photo")
            runs.append(
                {
                    "run": k + 1,
                    "killed_after_s": kill if rc == -signal.SIGKILL else None,
                    "exit": rc,
                    "wall_s": round(wall, 1),
                    "photos_added": after - before,
                    "photos_per_s": round((after - before) / wall, 1),
                    "peak_rss_mb": round(peak, 1),
                }
            )
            print(json.dumps(runs[-1]), flush=True)
            if rc not in (0, -signal.SIGKILL):
                print(out[-2000:], file=sys.stderr)
                return 1
        photos = _count(env, "select count(*) from annotation_photo")
        distinct = _count(env, "select count(distinct (case_id, original_name)) from annotation_photo")
        files = sum(1 for p in (var_dir / "media").rglob("*") if p.is_file())
        rc, _, _, swept = _run([*manage, "sweep_files", "--delete", "--min-age-minutes", "0"], env)
        print(swept.strip(), flush=True)
        files_after_sweep = sum(1 for p in (var_dir / "media").rglob("*") if p.is_file())
        res = {
            "command": " ".join(["bench/import_archive.py", *(argv if argv is not None else sys.argv[1:])]),
            "rows": rows,
            "photos_in_db": photos,
            "distinct_photos": distinct,
            "stored_files": files,
            # files a killed chunk had stored before its transaction could commit or clean up
            "orphan_files": files - photos,
            "orphan_files_after_sweep_files": files_after_sweep - photos,
            "runs": runs,
        }
        print(json.dumps(res, indent=2))
        return 0 if photos == distinct == rows and rc == 0 and files_after_sweep == photos else 1
    finally:
        if not a.keep:
            _scratch_db.drop(a.database_url, name)
            shutil.rmtree(var_dir, ignore_errors=True)
            if not a.workdir:
                shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
