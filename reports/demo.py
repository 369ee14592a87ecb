"""Demo and benchmark reader studies with simulated readings (no real patients, no real doctors)."""

from __future__ import annotations

import random
from datetime import timedelta

import numpy as np
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.db import transaction
from django.utils import timezone

from derm_portal import roles

from .models import (
    ConfidenceScale,
    Experience,
    QuestionType,
    ReaderStudy,
    Reading,
    Session,
    StudyCase,
    StudyReader,
    StudyStatus,
)
from .simulate import simulate_binary

DEMO_READERS = [  # username, first, last, experience
    ("reader1", "Rui", "Reader", Experience.RESIDENT),
    ("reader2", "Sam", "Reader", Experience.ATTENDING),
    ("reader3", "Ines", "Intern", Experience.INTERN),
    ("reader4", "Rafa", "Resident", Experience.RESIDENT),
    ("reader5", "Alex", "Attending", Experience.ATTENDING),
    ("reader6", "Eva", "Expert", Experience.EXPERT),
    ("reader7", "Ivo", "Intern", Experience.INTERN),
    ("reader8", "Erin", "Expert", Experience.EXPERT),
]


def demo_readers():
    from annotation.demo import demo_password

    roles.ensure_groups()
    User = get_user_model()
    group = Group.objects.get(name=roles.READER)
    out = []
    for username, first, last, level in DEMO_READERS:
        user, created = User.objects.get_or_create(username=username, defaults={"first_name": first, "last_name": last})
        if created:
            user.set_password(demo_password(username))
            user.save()
        user.groups.add(group)
        out.append((user, level))
    return out


def fake_model_probs(*, subs: list[str], truth: str, score_pos: float, positive: set[str], rng: random.Random) -> dict:
    """A plausible differential whose positive mass is score_pos and whose top item tends to be the truth."""
    pos = [s for s in subs if s in positive]
    neg = [s for s in subs if s not in positive]
    weights = {s: rng.random() * 0.3 + (2.0 if s == truth else 0.0) for s in subs}
    out = {}
    for group, mass in ((pos, score_pos), (neg, 1 - score_pos)):
        tot = sum(weights[s] for s in group) or 1.0
        for s in group:
            out[s] = mass * weights[s] / tot
    return out


def write_simulated_readings(
    *, study: ReaderStudy, readers: list[StudyReader], sim: dict, aided: bool, seed: int = 0
) -> int:
    """Store simulated binary answers (pos/neg) with confidence and times for every reader x case,
    and, when `aided`, a second session in which readers move towards the model's opinion."""
    rng = np.random.default_rng(seed)
    cases = list(StudyCase.objects.filter(study=study).order_by("number"))
    now = timezone.now()
    rows = []
    for j, sr in enumerate(readers):
        for i, sc in enumerate(cases):
            t = int(sim["time_ms"][j, i])
            served = now - timedelta(milliseconds=t)
            ans = "pos" if sim["answers"][j, i] else "neg"
            conf = (
                float(sim["confidence"][j, i])
                if study.confidence_scale == ConfidenceScale.FIVE
                else (
                    float(min(100, 50 + 12 * sim["confidence"][j, i]))
                    if study.confidence_scale == ConfidenceScale.PERCENT
                    else None
                )
            )
            rows.append(
                Reading(
                    study_reader=sr,
                    study_case=sc,
                    session=Session.UNAIDED,
                    answer=ans,
                    confidence=conf,
                    served_at=served,
                    answered_at=now,
                    server_ms=t,
                    active_ms=int(t * 0.85),
                )
            )
            if aided:
                model_pos = sim["model"][i] >= 0.5
                a = ans
                if (ans == "pos") != model_pos and rng.random() < 0.45:
                    a = "pos" if model_pos else "neg"
                rows.append(
                    Reading(
                        study_reader=sr,
                        study_case=sc,
                        session=Session.AIDED,
                        answer=a,
                        confidence=conf,
                        served_at=served,
                        answered_at=now,
                        server_ms=int(t * 0.7),
                        active_ms=int(t * 0.6),
                    )
                )
    Reading.objects.bulk_create(rows, batch_size=2000)
    StudyReader.objects.filter(pk__in=[r.pk for r in readers]).update(
        unaided_done_at=now, aided_done_at=now if aided else None
    )
    ReaderStudy.objects.filter(pk=study.pk).update(results_version=study.results_version + 1)
    return len(rows)


def write_simulated_class_readings(*, study: ReaderStudy, readers: list[StudyReader], seed: int = 0) -> int:
    """Multi-class / grade answers: right with a probability that grows with experience, else a random other class."""
    from .questions import classes, taxonomy_map, truth_class

    rng = np.random.default_rng(seed)
    tmap = taxonomy_map(study.taxonomy)
    codes = [c for c, _ in classes(study, tmap)]
    p_right = {"intern": 0.55, "resident": 0.65, "attending": 0.75, "expert": 0.85}
    now = timezone.now()
    rows = []
    for sr in readers:
        for sc in StudyCase.objects.filter(study=study).select_related("truth_sub_class"):
            t = truth_class(study, tmap, sc.truth_sub_class.code)
            ans = t if rng.random() < p_right[sr.experience] else rng.choice([c for c in codes if c != t])
            ms = int(rng.gamma(4.0, 2500.0)) + 1500
            rows.append(
                Reading(
                    study_reader=sr,
                    study_case=sc,
                    session=Session.UNAIDED,
                    answer=str(ans),
                    served_at=now - timedelta(milliseconds=ms),
                    answered_at=now,
                    server_ms=ms,
                    active_ms=int(ms * 0.8),
                )
            )
    Reading.objects.bulk_create(rows, batch_size=2000)
    StudyReader.objects.filter(pk__in=[r.pk for r in readers]).update(unaided_done_at=now)
    ReaderStudy.objects.filter(pk=study.pk).update(results_version=study.results_version + 1)
    return len(rows)


@transaction.atomic
def seed_demo_study(*, n_cases: int = 60, seed: int = 7) -> ReaderStudy:
    """A binary melanoma study on generated demo cases with simulated readings and model outputs."""
    from annotation import services as ann
    from annotation.demo import seed_demo, synthetic_lesion
    from annotation.models import Case, LabelSource, SubClass

    from . import services

    seed_demo()
    User = get_user_model()
    coord = User.objects.get(username="coord")
    derm = User.objects.get(username="derm")
    taxonomy = ann.taxonomy_load_default()
    subs = list(SubClass.objects.filter(taxonomy=taxonomy).order_by("code"))
    codes = [s.code for s in subs]
    by_code = {s.code: s for s in subs}
    positive = {"mel"} if "mel" in by_code else {codes[0]}
    sim = simulate_binary(
        n_cases, len(DEMO_READERS), prevalence=0.35, seed=seed, experiences=[lvl for *_, lvl in DEMO_READERS]
    )
    rng = random.Random(seed)
    negatives = [c for c in codes if c not in positive]
    cases = []
    truths = {}
    for i in range(n_cases):
        external = f"STUDY-DEMO-{i + 1:03d}"
        case = Case.objects.filter(external_id=external).first()
        truth = sorted(positive)[0] if sim["y"][i] else negatives[i % len(negatives)]
        if case is None:
            case = ann.case_create(
                patient_code=f"PSN-S{i + 1:03d}",
                sex=["female", "male"][i % 2],
                birth_year=1940 + i % 60,
                body_site=["back", "face", "leg", "arm", "trunk"][i % 5],
                external_id=external,
                clinical_history="Demo study case drawn by code: no real patient.",
                created_by=derm,
                age_at_visit=30 + i % 50,
            )
            ann.photo_attach(
                case=case,
                data=synthetic_lesion(5000 + i, size=320),
                filename=f"study-{i}.jpg",
                uploaded_by=derm,
                run_hooks=False,
            )
            ann.label_record(
                case=case,
                sub_class=by_code[truth],
                source=LabelSource.HISTOPATHOLOGY,
                by=derm,
                report_text="Demo pathology report.",
            )
        cases.append(case)
        truths[case.pk] = truth
    model_version = None
    try:
        from inference.models import ModelVersion

        model_version, _ = ModelVersion.objects.get_or_create(
            artefact_path="demo/simulated-reader-study",
            defaults={
                "name": "Demo model (simulated outputs, no artefact)",
                "taxonomy": taxonomy,
                "manifest": {"split": {"test_cases": [c.external_id for c in cases]}},
            },
        )
    except ImportError:  # pragma: no cover
        pass
    study = services.study_create(
        title="Demo: melanoma or not (simulated readings)",
        taxonomy=taxonomy,
        created_by=coord,
        question_type=QuestionType.BINARY,
        positive_codes=sorted(positive),
        confidence_scale=ConfidenceScale.FIVE,
        model_version=model_version,
        aided_session=model_version is not None,
        allow_back=True,
        description="Generated by manage.py seed_demo_study: synthetic photos, simulated readers and model.",
    )
    services.study_cases_add(study=study, cases=cases)
    if model_version is not None:
        index = {c.pk: i for i, c in enumerate(cases)}
        rows = list(study.study_cases.all())
        for sc in rows:
            i = index[sc.case_id]
            sc.model_probs = fake_model_probs(
                subs=codes, truth=truths[sc.case_id], score_pos=float(sim["model"][i]), positive=positive, rng=rng
            )
            sc.model_source = "simulated"
        StudyCase.objects.bulk_update(rows, ["model_probs", "model_source"])
        services.study_training_overlap(study=study)
    readers = [services.study_reader_invite(study=study, user=u, experience=lvl, by=coord) for u, lvl in demo_readers()]
    study.status = StudyStatus.OPEN
    study.opened_at = timezone.now()
    study.save(update_fields=["status", "opened_at"])
    # the simulated readings follow case order; readers 1 and 2 are left unread so a demo login can read
    order = {c.pk: i for i, c in enumerate(cases)}
    perm = np.array([order[sc.case_id] for sc in StudyCase.objects.filter(study=study).order_by("number")])
    sim_sorted = {
        k: (v[:, perm] if isinstance(v, np.ndarray) and v.ndim == 2 else (v[perm] if isinstance(v, np.ndarray) else v))
        for k, v in sim.items()
    }
    write_simulated_readings(
        study=study,
        readers=readers[2:],
        sim={k: (v[2:] if isinstance(v, np.ndarray) and v.ndim == 2 else v) for k, v in sim_sorted.items()},
        aided=study.aided_session,
        seed=seed,
    )
    # a second, multi-class study on the same cases: malignancy grade (one-vs-rest per grade)
    grade = services.study_create(
        title="Demo: malignancy grade (simulated readings)",
        taxonomy=taxonomy,
        created_by=coord,
        question_type=QuestionType.GRADE,
        confidence_scale=ConfidenceScale.NONE,
        model_version=model_version,
        description="Generated by manage.py seed_demo_study: benign / low / high malignancy, one-vs-rest charts.",
    )
    services.study_cases_add(study=grade, cases=cases)
    if model_version is not None:
        probs = dict(StudyCase.objects.filter(study=study).values_list("case_id", "model_probs"))
        rows = list(grade.study_cases.all())
        for sc in rows:
            sc.model_probs, sc.model_source = probs[sc.case_id], "simulated"
        StudyCase.objects.bulk_update(rows, ["model_probs", "model_source"])
        services.study_training_overlap(study=grade)
    g_readers = [
        services.study_reader_invite(study=grade, user=u, experience=lvl, by=coord) for u, lvl in demo_readers()
    ]
    grade.status = StudyStatus.OPEN
    grade.opened_at = timezone.now()
    grade.save(update_fields=["status", "opened_at"])
    write_simulated_class_readings(study=grade, readers=g_readers[2:], seed=seed)
    return study
