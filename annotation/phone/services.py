"""Phone-upload links: issue, check, revoke, and upload through them.

A link is `secrets.token_urlsafe(32)` (256 bits). Only its SHA-256 is stored, so the
database alone never yields a working link. A link is bound to one case, expires after
DERM_PHONE_TOKEN_TTL_MINUTES, accepts at most DERM_PHONE_TOKEN_MAX_PHOTOS photos and can
be revoked. Photos go through annotation.services.photo_attach, so the phone path has
exactly the desk's cleaning and rejection rules.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from derm_portal import roles

from ..images import ImageRejected, read_upload
from ..models import Case, Modality, PhoneUploadToken
from ..services import BatchResult, DuplicatePhoto, photo_attach

ACTIVE, EXPIRED, USED_UP, REVOKED = "active", "expired", "used_up", "revoked"
STATE_MESSAGES = {
    EXPIRED: "This upload link has expired. Ask at the desk for a new QR code.",
    USED_UP: "This upload link has already been used for the maximum number of photos. Ask at the desk for a new QR code.",
    REVOKED: "This upload link was cancelled at the desk. Ask at the desk for a new QR code.",
}


class PhoneLinkError(Exception):
    """The link cannot be used. `status` is the HTTP status the page answers with."""

    status = 410
    state = ""

    def __init__(self, message: str):
        self.message = message
        super().__init__(message)


class PhoneLinkUnknown(PhoneLinkError):
    status = 404
    state = "unknown"


class PhoneLinkInactive(PhoneLinkError):
    def __init__(self, state: str):
        self.state = state
        super().__init__(STATE_MESSAGES[state])


@dataclass(frozen=True)
class IssuedLink:
    token: PhoneUploadToken
    raw: str  # shown once (QR code + text); never stored


def token_hash(raw: str) -> str:
    return hashlib.sha256(raw.encode("utf-8")).hexdigest()


def default_ttl() -> timedelta:
    return timedelta(minutes=float(getattr(settings, "DERM_PHONE_TOKEN_TTL_MINUTES", 15)))


def default_max_photos() -> int:
    return int(getattr(settings, "DERM_PHONE_TOKEN_MAX_PHOTOS", 10))


def phone_token_state(*, token: PhoneUploadToken, now=None) -> str:
    now = now or timezone.now()
    if token.revoked_at is not None:
        return REVOKED
    if token.photos_uploaded >= token.max_photos:
        return USED_UP
    if now >= token.expires_at:
        return EXPIRED
    return ACTIVE


def phone_token_create(
    *, case: Case, created_by, ttl: timedelta | None = None, max_photos: int | None = None
) -> IssuedLink:
    if not roles.has_role(created_by, roles.CAN_EDIT_CASES):
        raise PermissionDenied("Your role may not add photos to cases.")
    max_photos = default_max_photos() if max_photos is None else int(max_photos)
    if max_photos < 1:
        raise ValidationError({"max_photos": "A phone link must allow at least one photo."})
    ttl = ttl or default_ttl()
    raw = secrets.token_urlsafe(32)
    token = PhoneUploadToken.objects.create(
        case=case,
        token_hash=token_hash(raw),
        created_by=created_by,
        expires_at=timezone.now() + ttl,
        max_photos=max_photos,
    )
    return IssuedLink(token=token, raw=raw)


def phone_token_revoke(*, token: PhoneUploadToken, by) -> PhoneUploadToken:
    if not roles.has_role(by, roles.CAN_EDIT_CASES):
        raise PermissionDenied("Your role may not manage phone links.")
    PhoneUploadToken.objects.filter(pk=token.pk, revoked_at__isnull=True).update(
        revoked_at=timezone.now(), revoked_by=by
    )
    token.refresh_from_db()
    return token


def phone_token_check(*, raw: str, lock: bool = False) -> PhoneUploadToken:
    """The usable token for `raw`, or PhoneLinkUnknown (404) / PhoneLinkInactive (410)."""
    qs = PhoneUploadToken.objects.select_related("case", "created_by")
    if lock:
        qs = qs.select_for_update(of=("self",))
    token = qs.filter(token_hash=token_hash(raw or "")).first()
    if token is None:
        raise PhoneLinkUnknown(
            "This upload link is not valid. Check that the whole address was copied, or ask at the desk for a new QR code."
        )
    state = phone_token_state(token=token)
    if state != ACTIVE:
        raise PhoneLinkInactive(state)
    return token


@dataclass
class PhoneUploadResult(BatchResult):
    remaining: int = 0
    state: str = ACTIVE
    reference: str = ""

    def as_dict(self):
        data = super().as_dict()
        data.update(remaining=self.remaining, state=self.state, reference=self.reference)
        return data


def phone_upload(*, raw: str, uploads: Iterable, modality: str = Modality.CLINICAL) -> PhoneUploadResult:
    """Attach the uploads to the link's case. The token row is locked for the whole
    upload, so two phones (or a double tap) can never exceed the photo limit. Each file
    is attached in its own savepoint: a bad one is reported and leaves nothing."""
    if modality not in Modality.values:
        modality = Modality.CLINICAL
    result = PhoneUploadResult()
    with transaction.atomic():
        token = phone_token_check(raw=raw, lock=True)
        stored = rejected = 0
        for upload in uploads:
            name = (getattr(upload, "name", "") or "photo")[:200]
            if token.photos_uploaded + stored >= token.max_photos:
                result.errors.append(
                    {
                        "file": name,
                        "error": f"{name}: not stored, this link's limit of {token.max_photos} photos is reached.",
                    }
                )
                continue
            try:
                data = read_upload(upload, name)
                with transaction.atomic():
                    photo = photo_attach(
                        case=token.case, data=data, filename=name, uploaded_by=token.created_by, modality=modality
                    )
            except (ImageRejected, DuplicatePhoto) as exc:
                rejected += 1
                result.errors.append({"file": name, "error": str(exc)})
            except ValidationError as exc:
                rejected += 1
                result.errors.append({"file": name, "error": f"{name}: {'; '.join(exc.messages)}"})
            else:
                stored += 1
                result.photos.append(photo)
        PhoneUploadToken.objects.filter(pk=token.pk).update(
            photos_uploaded=F("photos_uploaded") + stored,
            files_rejected=F("files_rejected") + rejected,
            last_used_at=timezone.now(),
        )
        token.refresh_from_db()
    result.remaining = token.remaining
    result.reference = token.case.reference
    result.state = phone_token_state(token=token)
    return result


def phone_tokens_active(*, case: Case) -> list[PhoneUploadToken]:
    now = timezone.now()
    qs = case.phone_tokens.filter(revoked_at__isnull=True, expires_at__gt=now, photos_uploaded__lt=F("max_photos"))
    return list(qs.select_related("created_by"))
