"""The portal's training export is the engine's data folder with the patient metadata and each photo's
modality (one writer with the crops export), so a model trained from the portal gets its metadata model
and serving uses it."""

import csv
from pathlib import Path

import pytest

from annotation import services as annotation_services
from annotation.datafolder import LABEL_COLUMNS
from annotation.models import SubClass
from inference import services
from inference.models import Prediction, PredictionStatus, TrainingStatus
from tests.factories import CaseFactory, PatientFactory, make_photo
from tests.inference.test_training import COLOURS, TINY

pytestmark = pytest.mark.django_db
SITES = {"nv": "back", "mel": "face", "bcc": "scalp"}


@pytest.fixture
def cases_with_metadata(taxonomy, users, settings, tmp_path):
    """Four cases per diagnosis, each with its own age, sex and site; the second photo is dermoscopic."""
    settings.DERM_MODEL_ROOT = str(tmp_path / "models")
    settings.VAR_DIR = tmp_path / "var"
    doc = users["dermatologist"]
    out = []
    for code, colour in COLOURS.items():
        sub = SubClass.objects.get(taxonomy=taxonomy, code=code)
        for i in range(4):
            patient = PatientFactory(sex="male" if i % 2 else "female", birth_year=1950 + 10 * i)
            case = CaseFactory(created_by=doc, patient=patient, body_site=SITES[code], age_at_visit=30 + 10 * i)
            photos = [
                make_photo(
                    case, color=(colour[0] + 3 * i, colour[1] + 5 * j, colour[2]), size=(40, 40), modality=modality
                )
                for j, modality in enumerate(("clinical", "dermoscopic"))
            ]
            annotation_services.label_record(case=case, sub_class=sub, source="histopathology", by=doc)
            out.append((case, code, photos))
    return out


def test_export_carries_case_metadata_and_modality(cases_with_metadata, users, tmp_path):
    from inference.ml.data import read_dataset
    from inference.ml.metadata import read_fields

    run = services.training_run_create(by=users["admin"], label_sources=["histopathology"], config=TINY)
    info = services.training_data_export(run=run, dest=tmp_path / "data")
    assert info["n_photos"] == 24 and info["n_cases"] == 12 and info["classes"] == ["bcc", "mel", "nv"]
    with open(tmp_path / "data" / "labels.csv", newline="", encoding="utf-8") as fh:
        assert next(csv.reader(fh)) == list(LABEL_COLUMNS)
    records, _ = read_dataset(tmp_path / "data")
    by_image = {Path(r.image).stem: r for r in records}
    for case, code, photos in cases_with_metadata:
        for photo in photos:
            r = by_image[f"p{photo.pk}"]
            assert (r.label, r.case_id) == (code, case.reference)
            assert r.meta["modality"] == photo.modality
            assert read_fields(r.meta) == {
                "age": str(case.age_at_visit // 10),
                "sex": case.patient.sex,
                "site": SITES[code],
            }


def test_portal_trained_model_fits_and_serves_the_metadata_model(cases_with_metadata, users):
    run = services.training_run_create(by=users["admin"], label_sources=["histopathology"], config=TINY)
    assert services.training_run_execute(run_pk=run.pk) == "succeeded"
    run.refresh_from_db()
    assert run.status == TrainingStatus.SUCCEEDED, run.error + run.log
    mv = run.model_version
    block = mv.manifest["metadata"]
    assert block["file"] == "metadata.json" and set(block["fields"]) == {"age", "sex", "site"}
    assert block["fields"]["site"] == 3 and mv.has_metadata
    # serving passes the case's metadata in, and the model now takes it
    services.model_activate(model_version=mv, by=None, reason="test")
    case, _, photos = cases_with_metadata[0]
    pred = services.prediction_request(photo=photos[0], enqueue=False)
    assert services.prediction_execute(prediction_pk=pred.pk, task_id="t") == "done"
    pred = Prediction.objects.get(pk=pred.pk)
    assert pred.status == PredictionStatus.DONE
    assert pred.metadata_used == {"age": str(case.age_at_visit // 10), "sex": "female", "site": SITES["nv"]}
