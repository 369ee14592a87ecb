"""Find the portal photo an imported file name refers to."""

from __future__ import annotations

import re
from collections import defaultdict
from pathlib import PurePath

from django.db.models import QuerySet

from ..models import Photo

IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".heic")
EXPORT_NAME_RE = re.compile(r"^(?P<stem>.*)-p(?P<pk>\d+)(?P<ext>\.[A-Za-z0-9]+)?$")


class PhotoMatcher:
    def __init__(self, photos: QuerySet[Photo]):
        self.by_name: dict[str, list[int]] = defaultdict(list)
        self.by_stem: dict[str, list[int]] = defaultdict(list)
        self.names: dict[int, str] = {}
        for pk, name in photos.values_list("pk", "original_name"):
            self.add(pk, name)

    def add(self, pk: int, name: str) -> None:
        name = PurePath(name or "").name
        self.names[pk] = name
        if name:
            self.by_name[name.lower()].append(pk)
            self.by_stem[PurePath(name).stem.lower()].append(pk)

    def match(self, filename: str) -> tuple[int | None, str | None]:
        name = PurePath(filename.replace("\\", "/")).name
        m = EXPORT_NAME_RE.match(name)
        if m and int(m["pk"]) in self.names and PurePath(self.names[int(m["pk"])]).stem.lower() == m["stem"].lower():
            return int(m["pk"]), None
        hits = self.by_name.get(name.lower()) or self.by_stem.get(PurePath(name).stem.lower()) or []
        if len(hits) == 1:
            return hits[0], None
        if len(hits) > 1:
            return None, f"{len(hits)} photos are named {name!r}; rename them or export/import them per case."
        return None, f"no photo named {name!r} in the portal."
