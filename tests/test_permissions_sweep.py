"""A sweep over every URL the portal routes: a reader (and a user with no role) opens
each GET endpoint filled with real primary keys, and only the allow-listed ones answer
200. A new page or API endpoint that forgets its permission check fails here.

Each URL parameter is filled with an object of its own kind (a prediction id where a prediction
is named, a study id where a study is ...), and an admin's sweep of the same URLs shows that
they name existing objects: a URL that answers 404 to everybody checks no permission."""

from __future__ import annotations

import re

import pytest
from django.urls import URLPattern, URLResolver, get_resolver

from annotation import boxes, crops, review
from annotation.models import Crop
from annotation.phone.services import phone_token_create
from derm_portal import roles
from inference import services as inference_services
from inference.models import ModelStatus
from reports import results
from reports.models import Reading
from tests.factories import UserFactory
from tests.inference.factories import (
    GradCamOverlayFactory,
    ModelVersionFactory,
    PredictionFactory,
    TrainingRunFactory,
)
from tests.reports.factories import build_study, read_all
from tests.test_permissions import World

# Endpoints a reader may open (no patient data): taxonomy, API description, own pages.
READER_ALLOWED = re.compile(
    r"^/($|taxonomy/|api/$|api/(schema|docs|redoc)/|api/taxonomies/|api/\.json$|m/|reading|readings/|my-studies|studies/mine|"
    r"api/my-readings/|accounts/|healthz|django-admin/(login|logout)|jsi18n|"
    r"assets/[\w.-]+\.js$|studies/plotly\.min\.js$)"
)
SKIP = re.compile(r"^/(accounts/logout/|static/|django-admin/)")

# (route prefix, parameter) -> the SweepWorld attribute that fills it; the first match wins.
PARAMETERS = [
    ("annotate/crops/", "pk", "crop"),
    ("annotate/gold/", "pk", "annotation"),
    ("annotate/photo/", "pk", "photo"),
    ("annotate/review/", "pk", "annotation"),
    ("api/assessments/", "pk", "assessment"),
    ("api/boxes/", "pk", "box"),
    ("api/cases/", "pk", "case"),
    ("api/labels/", "pk", "label"),
    ("api/models/", "pk", "model"),
    ("api/my-readings/", "pk", "reading"),
    ("api/overlays/", "pk", "overlay"),
    ("api/patients/", "pk", "patient"),
    ("api/photos/", "pk", "photo"),
    ("api/predictions/", "pk", "prediction"),
    ("api/reader-studies/", "pk", "study"),
    ("api/reviews/", "pk", "annotation"),
    ("api/taxonomies/", "pk", "taxonomy"),
    ("api/training-runs/", "pk", "run"),
    ("api/workspace/", "pk", "photo"),
    ("api/", "format", "api_format"),
    ("cases/", "pk", "case"),
    ("cases/", "label_pk", "label"),
    ("cases/", "token_pk", "phone_link"),
    ("m/upload/", "token", "phone_token"),
    ("models/", "pk", "model"),
    ("overlays/", "pk", "overlay"),
    ("photos/", "photo_pk", "photo"),
    ("photos/", "pk", "photo"),
    ("predictions/", "pk", "prediction"),
    ("reading/", "study_pk", "study"),
    ("reading/", "session", "session"),
    ("reading/", "number", "case_number"),
    ("reading/", "idx", "photo_index"),
    ("studies/", "pk", "study"),
    ("studies/", "key", "chart_key"),
    ("studies/", "fmt", "chart_format"),
    ("taxonomy/", "pk", "taxonomy"),
    ("training/", "pk", "run"),
]
MIN_ADMIN_CHECKED = 95  # the portal routes 102 GET URLs outside SKIP
MIN_ADMIN_OK = 70  # 78 of them answer an admin 200


class SweepWorld(World):
    """The permission matrix's world plus one object of every kind a URL names."""

    def __init__(self, users):
        super().__init__(users)
        annotator, reviewer = users[roles.ANNOTATOR], UserFactory(role=roles.ANNOTATOR)
        self.annotation = boxes.annotation_save(
            photo=self.photo,
            user=annotator,
            submit=True,
            boxes=[{"x0": 4, "y0": 4, "x1": 40, "y1": 40, "label": "mel"}],
        )
        self.box = self.annotation.boxes.get()
        review.review_accept(annotation=self.annotation, by=reviewer)
        crops.crops_make(photos=[self.photo])
        self.crop = Crop.objects.get(box=self.box)
        self.model = ModelVersionFactory(taxonomy=self.taxonomy, status=ModelStatus.ACTIVE)
        self.prediction = PredictionFactory(
            photo=self.photo,
            model_version=self.model,
            malignancy_grade=3,
            malignancy_score=2.4,
            margin=0.3,
            meta_probabilities={"melanocytic": 0.9, "keratinocytic": 0.1, "dermal_vascular": 0.0},
        )
        self.overlay = GradCamOverlayFactory(prediction=self.prediction)
        self.assessment = inference_services.assessment_record(
            photo=self.photo, doctor=users[roles.DERMATOLOGIST], agrees=True
        )
        self.run = TrainingRunFactory(taxonomy=self.taxonomy, created_by=users[roles.ADMIN], status="failed")
        link = phone_token_create(case=self.case, created_by=users[roles.DERMATOLOGIST])
        self.phone_link, self.phone_token = link.token, link.raw
        self.study, _ = build_study(users=users, taxonomy=self.taxonomy, truths=("mel", "nv", "mel", "nv"))
        read_all(self.study, users[roles.READER], {f"EXT-{i:03d}": a for i, a in enumerate(["pos", "neg"] * 2)})
        self.reading = Reading.objects.filter(study_reader__study=self.study).first()
        self.chart_key = results.reader_study_results(study=self.study)["tasks"][0]["key"]
        self.session, self.case_number, self.photo_index = "unaided", 1, 0
        self.chart_format, self.api_format = "png", ".json"


def _walk(patterns, prefix=""):
    for p in patterns:
        if isinstance(p, URLResolver):
            yield from _walk(p.url_patterns, prefix + str(p.pattern))
        elif isinstance(p, URLPattern):
            yield prefix + str(p.pattern)


def _routes() -> list[str]:
    out = []
    for route in _walk(get_resolver().url_patterns):
        route = route.lstrip("^").replace("/^", "/").replace("$", "")
        if "(?P<format>" in route or "\\.(?P" in route:
            continue
        route = re.sub(r"\(\?P<(\w+)>\[\^/\.\]\+\)", r"<\1>", route)  # the routers' regexes as <name>
        out.append(route)
    return sorted(set(out))


def _value(route: str, name: str, w: SweepWorld) -> str:
    for prefix, param, attr in PARAMETERS:
        if route.startswith(prefix) and name == param:
            value = getattr(w, attr)
            return str(getattr(value, "pk", value))
    raise LookupError(f"no object fills <{name}> of {route}: add it to PARAMETERS")


def _urls(w: SweepWorld) -> list[tuple[str, str]]:
    """(route, concrete URL) of every GET route outside SKIP."""
    out = []
    for route in _routes():
        if SKIP.match("/" + route):
            continue
        url = re.sub(r"<(?:\w+:)?(\w+)>", lambda m, r=route: _value(r, m.group(1), w), route)
        out.append((route, "/" + url))
    return out


@pytest.mark.django_db
def test_every_url_parameter_is_filled_with_an_existing_object(client, users):
    """An admin fetches every swept URL: none answers 404, so each names objects that exist, and
    most answer 200 (the rest are POST-only, 405, or reader-only pages, 403)."""
    w = SweepWorld(users)
    client.force_login(users[roles.ADMIN])
    urls = _urls(w)
    assert all("<" not in url and "(" not in url for _, url in urls)
    codes = {route: client.get(url).status_code for route, url in urls}
    assert sorted(route for route, code in codes.items() if code == 404) == []
    checked, ok = sum(code != 404 for code in codes.values()), sum(code == 200 for code in codes.values())
    print(f"{len(urls)} URLs swept; an admin got {ok} times 200 and {checked - ok} times another answer than 404")
    assert checked >= MIN_ADMIN_CHECKED and ok >= MIN_ADMIN_OK


@pytest.mark.django_db
@pytest.mark.parametrize("role", [roles.READER, None])
def test_no_clinical_get_endpoint_is_open_to_readers(client, users, make_user, role):
    w = SweepWorld(users)
    client.force_login(users[role] if role else make_user(None))
    opened = []
    for _, url in _urls(w):
        response = client.get(url)
        if response.status_code == 200 and not READER_ALLOWED.match(url):
            opened.append(url)
    assert opened == [], f"reader/no-role user opened: {opened}"
