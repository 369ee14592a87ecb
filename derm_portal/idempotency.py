"""Create forms that may be submitted twice (a double click, a browser resend) create one object.

The form carries a one-time token (``{% submission_token %}`` from ``portal_forms``); the service passes
it to ``once``, which records the token in the same transaction as the object. A second submission with
the same token waits for the first (unique row) and gets the object it created.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction

from .models import SubmissionToken

FIELD = "submission_token"
T = TypeVar("T")


def token_from(post) -> str:
    """The form's token (empty when the client sent none, e.g. the API)."""
    return (post.get(FIELD) or "").strip()


def once(*, user, kind: str, token: str, create: Callable[[], T], fetch: Callable[[int], T]) -> tuple[T, bool]:
    """``create()`` unless this user's ``token`` for ``kind`` already created something: then
    ``fetch(pk)`` of that object. Returns (object, created). No token: always creates."""
    if not token:
        return create(), True
    if len(token) > 64 or not token.isalnum():
        raise ValidationError(f"The form's {FIELD} is malformed; reload the page and submit again.")
    try:
        with transaction.atomic():
            mark = SubmissionToken.objects.create(user=user, kind=kind, token=token)
            obj = create()
            mark.object_pk = obj.pk
            mark.save(update_fields=["object_pk"])
            return obj, True
    except IntegrityError:
        mark = SubmissionToken.objects.filter(user=user, kind=kind, token=token).first()
        if mark is None or mark.object_pk is None:
            raise
    return fetch(mark.object_pk), False
