"""Model outputs for a study computed on demand by the inference.ml Predictor when the inference app
has no predictions (a tiny model trained here on generated images), and the training-overlap check
read from the real artefact manifest."""

import pytest
import torch

from derm_portal import roles
from reports import results, services
from tests.reports.factories import make_confirmed_case


@pytest.fixture(scope="module")
def tiny_artefact(tmp_path_factory):
    from annotation.defaults import HAM10000_TAXONOMY
    from inference.ml.train import TrainConfig, train
    from tests.inference.conftest import TINY, make_ham_like

    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("reports-tiny-model")
    data = make_ham_like(root / "data")
    return train(TrainConfig(data=str(data), taxonomy=dict(HAM10000_TAXONOMY), out=str(root / "model"), **TINY))


def test_predictor_fills_model_outputs_and_manifest_gives_overlap(tiny_artefact, taxonomy, users):
    from inference.ml.artefact import read_manifest
    from inference.models import ModelVersion

    torch.set_num_threads(1)
    manifest = read_manifest(tiny_artefact)
    test_cases = manifest["split"]["test_cases"]
    derm = users[roles.DERMATOLOGIST]
    held_out = test_cases[0]
    trained_on = next(
        f"case_{c}_{i}" for c in ("nv", "mel", "bkl") for i in range(2) if f"case_{c}_{i}" not in test_cases
    )
    cases = [
        make_confirmed_case(sub_code="mel", taxonomy=taxonomy, by=derm, i=0, external_id=held_out),
        make_confirmed_case(sub_code="nv", taxonomy=taxonomy, by=derm, i=1, external_id=trained_on),
        make_confirmed_case(sub_code="nv", taxonomy=taxonomy, by=derm, i=2, photos=2),  # portal case, no external id
    ]
    mv = ModelVersion.objects.create(
        name="tiny", taxonomy=taxonomy, artefact_path=str(tiny_artefact)
    )  # manifest empty: read from disk
    study = services.study_create(
        title="t",
        taxonomy=taxonomy,
        created_by=users[roles.COORDINATOR],
        positive_codes=["mel"],
        model_version=mv,
        aided_session=True,
    )
    services.study_cases_add(study=study, cases=cases)
    overlap = dict(study.study_cases.values_list("case_id", "in_training"))
    assert overlap == {cases[0].pk: "no", cases[1].pk: "possible", cases[2].pk: "unknown"}
    assert any("AI-aided" in p for p in services.study_problems(study=study))
    out = services.study_model_outputs_refresh(study=study)
    assert out == {"from_predictions": 0, "from_predictor": 3, "missing": 0, "reason": ""}
    for sc in study.study_cases.all():
        assert sc.model_source == "predictor"
        assert set(sc.model_probs) == {"nv", "mel", "akiec", "bcc", "bkl", "df", "vasc"}
        assert sum(sc.model_probs.values()) == pytest.approx(1.0, abs=1e-4)
    services.study_reader_invite(study=study, user=users[roles.READER], experience="resident", by=None)
    assert not any("AI-aided" in p for p in services.study_problems(study=study))
    res = results.reader_study_results(study=study, use_cache=False)
    assert res["tasks"][0]["model"] is not None and 0 <= res["tasks"][0]["model"]["auc"] <= 1
