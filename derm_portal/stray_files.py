"""Stored files that no row refers to: what an interrupted import leaves behind (its files are
written before their rows commit) or a failed delete. Reads every FileField of every model and
walks the storage folders those files live in; removes nothing younger than ``min_age`` so that a
job writing right now keeps its files."""

from __future__ import annotations

import posixpath
from dataclasses import dataclass
from datetime import timedelta

from django.apps import apps
from django.core.files.storage import default_storage
from django.db import models
from django.utils import timezone


@dataclass(frozen=True)
class StrayFile:
    name: str
    size: int
    modified: object  # datetime


def referenced_names() -> set[str]:
    """Every stored file name a row refers to, over all models' FileFields."""
    names: set[str] = set()
    for model in apps.get_models():
        for field in model._meta.get_fields():
            if isinstance(field, models.FileField):
                names.update(
                    n
                    for n in model._default_manager.exclude(**{field.name: ""}).values_list(field.name, flat=True)
                    if n
                )
    return names


def _walk(storage, folder: str):
    dirs, files = storage.listdir(folder)
    for f in files:
        yield posixpath.join(folder, f) if folder else f
    for d in dirs:
        yield from _walk(storage, posixpath.join(folder, d) if folder else d)


def stray_files(*, min_age: timedelta, storage=default_storage) -> list[StrayFile]:
    """Files in the top-level storage folders that hold referenced files, referred to by no row and
    last changed at least ``min_age`` ago, oldest first."""
    referenced = referenced_names()
    folders = sorted({n.split("/", 1)[0] for n in referenced if "/" in n})
    cutoff = timezone.now() - min_age
    out = []
    for folder in folders:
        if not storage.exists(folder):
            continue
        for name in _walk(storage, folder):
            if name in referenced:
                continue
            modified = storage.get_modified_time(name)
            if modified <= cutoff:
                out.append(StrayFile(name, storage.size(name), modified))
    return sorted(out, key=lambda f: (f.modified, f.name))


def remove(files: list[StrayFile], storage=default_storage) -> int:
    """Delete the files (each checked again against the rows just before); how many went."""
    referenced = referenced_names()
    gone = 0
    for f in files:
        if f.name not in referenced:
            storage.delete(f.name)
            gone += 1
    return gone
