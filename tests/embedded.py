"""manage.py in a child process on an embedded (SQLite) portal database file, for tests that need a
fresh process or the embedded database while the suite itself runs on PostgreSQL."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def env(db: Path, **extra: str) -> dict:
    """cwd, environment and text mode for a child on the SQLite file ``db`` with the test settings."""
    environ = {
        **os.environ,
        "DATABASE_URL": f"sqlite:///{db}",
        "DJANGO_SETTINGS_MODULE": "derm_portal.settings.test",
        **extra,
    }
    return {"cwd": ROOT, "env": environ, "text": True}


def manage(db: Path, *args: str, timeout: float = 300, **extra: str) -> subprocess.CompletedProcess:
    """``manage.py ARGS`` on ``db``; its output captured."""
    return subprocess.run(
        [sys.executable, "manage.py", *args], capture_output=True, timeout=timeout, check=False, **env(db, **extra)
    )
