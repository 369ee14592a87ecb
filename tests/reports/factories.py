"""Builders of reader studies for tests. Studies go through reports.services (numbering, frozen
reference standard, reader seeds), so these are functions over the services, not model factories."""

from annotation import services as ann
from annotation.models import LabelSource, SubClass
from derm_portal import roles
from reports import services
from reports.models import Session, StudyCase
from tests.factories import CaseFactory, PatientFactory, make_photo
from tests.inference.factories import ModelVersionFactory

COLOURS = [(30 + 9 * i, 200 - 7 * i, 90 + 5 * i) for i in range(40)]


def make_confirmed_case(
    *, sub_code, taxonomy, by, i, external_id="", photos=1, patient_code=None, report_text="Histology."
):
    case = CaseFactory(
        external_id=external_id, patient=PatientFactory(code=patient_code) if patient_code else PatientFactory()
    )
    for k in range(photos):
        make_photo(case, color=COLOURS[(i * 3 + k) % len(COLOURS)], user=by)
    ann.label_record(
        case=case,
        sub_class=SubClass.objects.get(taxonomy=taxonomy, code=sub_code),
        source=LabelSource.HISTOPATHOLOGY,
        by=by,
        report_text=report_text,
    )
    return case


def make_model_version(taxonomy, name="tiny test model", manifest=None):
    """A compared model with no artefact on disk."""
    return ModelVersionFactory(name=name, taxonomy=taxonomy, manifest=manifest or {})


def build_study(
    *,
    users,
    taxonomy,
    truths=("mel", "mel", "mel", "nv", "nv", "bkl"),
    readers=None,
    question_type="binary",
    positive=("mel",),
    confidence="five",
    model=True,
    model_probs=None,
    aided=False,
    allow_back=False,
    open_it=True,
    shuffle=True,
    class_level="sub",
    title="Test study",
    **kwargs,
):
    derm = users[roles.DERMATOLOGIST]
    coord = users[roles.COORDINATOR]
    cases = [
        make_confirmed_case(sub_code=t, taxonomy=taxonomy, by=derm, i=i, external_id=f"EXT-{i:03d}")
        for i, t in enumerate(truths)
    ]
    mv = make_model_version(taxonomy) if model else None
    study = services.study_create(
        title=title,
        taxonomy=taxonomy,
        created_by=coord,
        question_type=question_type,
        positive_codes=positive,
        confidence_scale=confidence,
        model_version=mv,
        aided_session=aided,
        allow_back=allow_back,
        shuffle=shuffle,
        class_level=class_level,
        **kwargs,
    )
    out = services.study_cases_add(study=study, cases=cases)
    assert out["added"] == len(cases)
    if model:
        rows = list(study.study_cases.select_related("truth_sub_class"))
        for sc in rows:
            probs = (model_probs or {}).get(sc.case.external_id)
            if probs is None:  # a good model: most mass on the truth
                probs = dict.fromkeys(("nv", "mel", "akiec", "bcc", "bkl", "df", "vasc"), 0.02)
                probs[sc.truth_sub_class.code] = 0.88
            sc.model_probs, sc.model_source = probs, "prediction"
        StudyCase.objects.bulk_update(rows, ["model_probs", "model_source"])
    for user, level in readers or [(users[roles.READER], "resident")]:
        services.study_reader_invite(study=study, user=user, experience=level, by=coord)
    if open_it:
        services.study_open(study=study, by=coord)
    study.refresh_from_db()
    return study, cases


def read_all(study, user, answers_by_external_id, *, session=Session.UNAIDED, confidence=4, comment=""):
    """Answer every case through the services, in the reader's own order."""
    sr = study.readers.get(user=user)
    while True:
        sr.refresh_from_db()
        number = services.reading_next_number(study_reader=sr, session=session)
        if number is None:
            break
        sc = StudyCase.objects.select_related("case").get(study=study, number=number)
        services.reading_serve(study_reader=sr, study_case=sc, session=session)
        services.reading_submit(
            study_reader=sr,
            study_case=sc,
            session=session,
            answer=answers_by_external_id[sc.case.external_id],
            confidence=confidence if study.confidence_scale != "none" else None,
            comment=comment,
        )
    sr.refresh_from_db()
    return sr
