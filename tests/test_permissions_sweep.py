"""A sweep over every URL the portal routes: a reader (and a user with no role) opens
each GET endpoint filled with real primary keys, and only the allow-listed ones answer
200. A new page or API endpoint that forgets its permission check fails here."""
from __future__ import annotations

import re

import pytest
from django.urls import URLPattern, URLResolver, get_resolver

from derm_portal import roles
from tests.test_permissions import World

# Endpoints a reader may open (no patient data): taxonomy, API description, own pages.
READER_ALLOWED = re.compile(
    r"^/($|taxonomy/|api/$|api/(schema|docs|redoc)/|api/taxonomies/|api/\.json$|m/|reading|readings/|my-studies|studies/mine|"
    r"api/my-readings/|accounts/|healthz|django-admin/(login|logout)|jsi18n|"
    r"assets/[\w.-]+\.js$|studies/plotly\.min\.js$)"
)
SKIP = re.compile(r"^/(accounts/logout/|static/|django-admin/)")


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
        out.append(route)
    return sorted(set(out))


def _fill(route: str, w: World) -> list[str] | None:
    """Concrete URLs for a route, with every integer parameter set to real objects' keys."""
    if "(?P<" in route and not re.search(r"\(\?P<\w+>\[\^/\.\]\+\)", route):
        return None  # custom regexes we cannot fill reliably
    route = re.sub(r"\(\?P<(\w+)>\[\^/\.\]\+\)", r"<\1>", route)
    params = re.findall(r"<(?:(\w+):)?(\w+)>", route)
    if not params:
        return ["/" + route]
    urls = []
    for value in {w.case.pk, w.photo.pk, w.label.pk, w.patient.pk}:
        url = re.sub(r"<(?:(\w+):)?(\w+)>", lambda m: str(w.label.pk if m.group(2) == "label_pk" else value), route)
        urls.append("/" + url)
    return urls


@pytest.mark.django_db
@pytest.mark.parametrize("role", [roles.READER, None])
def test_no_clinical_get_endpoint_is_open_to_readers(client, users, make_user, role):
    w = World(users)
    client.force_login(users[role] if role else make_user(None))
    opened = []
    for route in _routes():
        if SKIP.match("/" + route):
            continue
        for url in _fill(route, w) or []:
            if "<" in url or "(" in url:
                continue
            response = client.get(url)
            if response.status_code == 200 and not READER_ALLOWED.match(url):
                opened.append(url)
    assert opened == [], f"reader/no-role user opened: {opened}"
