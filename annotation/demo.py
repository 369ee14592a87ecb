"""Demo data for the first-run portal: users for every role and a handful of cases
with photos drawn by code (no downloads, no real patients)."""

from __future__ import annotations

import io
import random

import numpy as np
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.db import transaction
from PIL import Image, ImageDraw, ImageFilter

from derm_portal import roles

from . import services
from .models import Case, LabelSource, Modality, SubClass

DEMO_USERS = [
    ("derm", "Dana", "Dermatologist", roles.DERMATOLOGIST),
    ("annot", "Ari", "Annotator", roles.ANNOTATOR),
    ("annot2", "Bo", "Annotator", roles.ANNOTATOR),
    ("coord", "Cleo", "Coordinator", roles.COORDINATOR),
    ("reader1", "Rui", "Reader", roles.READER),
    ("reader2", "Sam", "Reader", roles.READER),
    ("admin", "Ada", "Admin", roles.ADMIN),
]


def demo_password(username: str) -> str:
    """Demo accounts only exist in the local first-run database."""
    return f"demo-{username}"


def synthetic_lesion(seed: int, size: int = 448, dermoscopic: bool = False) -> bytes:
    rng = random.Random(seed)
    skin = np.array([rng.randint(190, 235), rng.randint(140, 180), rng.randint(110, 150)], dtype=np.float32)
    grid = np.random.default_rng(seed).normal(0, 6, (size, size, 3)).astype(np.float32)
    img = Image.fromarray(np.clip(skin + grid, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(img)
    cx, cy = size // 2 + rng.randint(-40, 40), size // 2 + rng.randint(-40, 40)
    for k in range(rng.randint(2, 5)):
        rx, ry = rng.randint(40, 120), rng.randint(40, 120)
        tone = (rng.randint(60, 140), rng.randint(30, 80), rng.randint(20, 60))
        draw.ellipse([cx - rx + k * 7, cy - ry + k * 5, cx + rx - k * 9, cy + ry - k * 4], fill=tone)
    img = img.filter(ImageFilter.GaussianBlur(2.5))
    if dermoscopic:
        mask = Image.new("L", img.size, 0)
        ImageDraw.Draw(mask).ellipse([8, 8, size - 8, size - 8], fill=255)
        black = Image.new("RGB", img.size, (0, 0, 0))
        img = Image.composite(img, black, mask)
    out = io.BytesIO()
    img.save(out, "JPEG", quality=92)
    return out.getvalue()


@transaction.atomic
def seed_demo(*, cases: int = 8) -> dict:
    roles.ensure_groups()
    User = get_user_model()
    users = {}
    for username, first, last, role in DEMO_USERS:
        user, created = User.objects.get_or_create(username=username, defaults={"first_name": first, "last_name": last})
        if created:
            user.set_password(demo_password(username))
            user.is_staff = role == roles.ADMIN
            user.is_superuser = role == roles.ADMIN
            user.save()
        user.groups.add(Group.objects.get(name=role))
        users[username] = user
    taxonomy = services.taxonomy_load_default(created_by=users["admin"])
    subs = list(SubClass.objects.filter(taxonomy=taxonomy).order_by("code"))
    made = 0
    sites = ["back", "face", "lower extremity", "upper extremity", "trunk", "scalp", "abdomen", "neck"]
    sources = [LabelSource.HISTOPATHOLOGY, LabelSource.FOLLOW_UP, LabelSource.CONSENSUS, LabelSource.HISTOPATHOLOGY]
    for i in range(cases):
        external = f"DEMO-{i + 1:03d}"
        if Case.objects.filter(external_id=external).exists():
            continue
        case = services.case_create(
            patient_code=f"PSN-{1000 + i}",
            sex=["female", "male"][i % 2],
            birth_year=1950 + 5 * i,
            body_site=sites[i % len(sites)],
            clinical_history="Demo case drawn by code: no real patient.",
            external_id=external,
            created_by=users["derm"],
            age_at_visit=70 - 5 * i,
        )
        for k in range(1 + i % 3):
            derm = k % 2 == 1
            services.photo_attach(
                case=case,
                data=synthetic_lesion(100 * i + k, dermoscopic=derm),
                filename=f"demo-{i}-{k}.jpg",
                uploaded_by=users["derm"],
                modality=Modality.DERMOSCOPIC if derm else Modality.CLINICAL,
                run_hooks=False,
            )
        if i < cases - 2:
            services.label_record(
                case=case,
                sub_class=subs[i % len(subs)],
                source=sources[i % len(sources)],
                by=users["derm"],
                report_text="Demo report." if sources[i % len(sources)] == LabelSource.HISTOPATHOLOGY else "",
            )
        made += 1
    return {"users": list(users), "cases_created": made}
