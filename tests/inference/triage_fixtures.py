"""The tiny session model with its triage calibration (``triage_fit.fit_triage`` on its own data:
trained on dermoscopic photos), registered and activated in a test database."""

import shutil
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def triaged_model_dir(tiny_model_dir, tmp_path_factory):
    from inference.ml.triage_fit import fit_triage

    dest = tmp_path_factory.mktemp("triaged") / "model"
    shutil.copytree(tiny_model_dir, dest)
    fit_triage(dest, Path(tiny_model_dir).parent / "data")
    return dest


@pytest.fixture
def triage_data_photo(tiny_model_dir):
    """Bytes of one of the model's own training photos (familiar to its unfamiliar-photo detector)."""
    return (Path(tiny_model_dir).parent / "data" / "images" / "img_0001.jpg").read_bytes()


@pytest.fixture
def triaged_active_model(db, taxonomy, triaged_model_dir, settings, tmp_path, users):
    from inference import loader, services

    settings.DERM_MODEL_ROOT = str(tmp_path / "models")
    dest = Path(settings.DERM_MODEL_ROOT) / "triaged"
    shutil.copytree(triaged_model_dir, dest)
    loader.cache_clear()
    mv = services.model_register(model_dir=dest, name="tiny triaged model", created_by=users["admin"])
    return services.model_activate(model_version=mv, by=users["admin"], reason="tiny test model")
