"""A case as busy as the case page gets: photos with files, each with the active model's finished
prediction and heat map, two annotators' boxes and a doctor's assessment; three diagnosis labels, a
label change. Shared by the page query-count tests and bench/page_cost.py."""

from __future__ import annotations

from django.contrib.auth import get_user_model

from annotation.models import Case, DiagnosisLabel, LabelChange, LabelSource, SubClass
from derm_portal import roles
from inference.models import DoctorAssessment, ModelStatus, ModelVersion
from tests.annotation.factories import BoxFactory, PhotoAnnotationFactory
from tests.factories import CaseFactory, UserFactory, make_photo
from tests.inference.factories import GradCamOverlayFactory, ModelVersionFactory, PredictionFactory


def active_model() -> ModelVersion:
    return ModelVersion.objects.filter(status=ModelStatus.ACTIVE).first() or ModelVersionFactory(
        status=ModelStatus.ACTIVE
    )


def busy_case(n_photos: int = 6, case: Case | None = None) -> Case:
    case = case or CaseFactory()
    model = active_model()
    subs = {s.code: s for s in SubClass.objects.filter(taxonomy=model.taxonomy)}
    User = get_user_model()
    annotators = [
        User.objects.filter(username=f"busy-annotator-{k}").first()
        or UserFactory(username=f"busy-annotator-{k}", role=roles.ANNOTATOR)
        for k in range(2)
    ]
    doctor = User.objects.filter(username="busy-derm").first() or UserFactory(
        username="busy-derm", role=roles.DERMATOLOGIST
    )
    for k, (code, source) in enumerate(
        [("mel", LabelSource.HISTOPATHOLOGY), ("nv", LabelSource.CLINICAL), ("bkl", LabelSource.CONSENSUS)]
    ):
        label = DiagnosisLabel.objects.create(
            case=case, sub_class=subs[code], source=source, confirmed=k == 0, signed_by=doctor
        )
        LabelChange.objects.create(
            label=label, case=case, source=source, new_sub_class=label.sub_class, changed_by=doctor
        )
    for i in range(n_photos):
        photo = make_photo(case, color=(40 + 30 * i % 200, 90, 120), size=(96, 72))
        pred = PredictionFactory(photo=photo, model_version=model)
        GradCamOverlayFactory(prediction=pred, heatmap=[[0.5] * 32] * 32)  # its share inside the boxes is shown
        for a in annotators:
            ann = PhotoAnnotationFactory(photo=photo, annotator=a, status="annotated")
            for j in range(3):
                BoxFactory(annotation=ann, sub_class=subs["mel" if j else "nv"], x0=j, y0=j, x1=j + 20, y1=j + 20)
        DoctorAssessment.objects.create(case=case, photo=photo, prediction=pred, doctor=doctor, agrees=True)
    return case
