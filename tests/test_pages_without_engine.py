"""The pages doctors read all day (case list, a case with predicted, annotated photos) never load
the engine: importing torch costs a web worker seconds and about 700 MB, and every request queued
behind the first such page waits for it. Runs the pages in a fresh process on an embedded database,
since the test process itself has torch loaded by other tests."""

from tests.embedded import manage

_PAGES = """
import sys
from django.test import Client
from derm_portal import roles
from annotation.services import taxonomy_load_default
from tests.busy_case import busy_case
from tests.factories import UserFactory

taxonomy_load_default()
case = busy_case(3)
client = Client()
client.force_login(UserFactory(username="light-derm", role=roles.DERMATOLOGIST))
for url in ("/cases/", f"/cases/{case.pk}/", "/cases/?diagnosis=mel"):
    response = client.get(url)
    assert response.status_code == 200, (url, response.status_code)
    assert b"Grad-CAM" in response.content or url != f"/cases/{case.pk}/", url
heavy = sorted(m for m in ("torch", "torchvision", "pytorch_grad_cam", "safetensors") if m in sys.modules)
print("HEAVY", ",".join(heavy) or "-")
"""


def test_case_pages_do_not_import_torch(tmp_path):
    db = tmp_path / "portal.sqlite3"
    for args in (["migrate", "--noinput", "-v", "0"], ["shell", "-c", _PAGES]):
        r = manage(db, *args, DERM_VAR_DIR=str(tmp_path / "var"))
        assert r.returncode == 0, r.stderr[-3000:]
    assert "HEAVY -" in r.stdout, r.stdout[-2000:]
