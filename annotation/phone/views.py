"""Desk endpoints (login + role), the public mobile page (token only) and the case panel."""

from __future__ import annotations

import segno
from django.conf import settings
from django.core.cache import cache
from django.core.exceptions import PermissionDenied
from django.http import JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from derm_portal import roles

from .. import selectors
from ..models import Modality, Photo
from . import services

# --------------------------------------------------------------------------- helpers


def _wants_json(request) -> bool:
    return request.headers.get("accept", "").startswith("application/json") or bool(
        request.headers.get("x-requested-with")
    )


def _require(request, wanted, message="Your role may not do this."):
    if not roles.has_role(request.user, *wanted):
        raise PermissionDenied(message)


def phone_url(request, raw: str) -> str:
    """Absolute link for the QR code: DERM_PUBLIC_BASE_URL when set (a hospital LAN
    name the phones can reach), else the host the desk user reached."""
    path = reverse("annotation:phone_upload", args=[raw])
    base = (getattr(settings, "DERM_PUBLIC_BASE_URL", "") or "").strip().rstrip("/")
    return f"{base}{path}" if base else request.build_absolute_uri(path)


def qr_svg(url: str) -> str:
    # Inline SVG: no image request, nothing cached, crisp at any zoom.
    return segno.make(url, error="m").svg_inline(scale=5, border=4, dark="#10303d", omitsize=False)


def _token_dict(token, *, now=None) -> dict:
    state = services.phone_token_state(token=token, now=now)
    return {
        "id": token.pk,
        "state": state,
        "max_photos": token.max_photos,
        "photos_uploaded": token.photos_uploaded,
        "remaining": token.remaining,
        "expires_at": token.expires_at.isoformat(),
        "seconds_left": max(0, int((token.expires_at - (now or timezone.now())).total_seconds())),
        "revoke_url": reverse("annotation:phone_token_revoke", args=[token.case_id, token.pk]),
    }


def _photo_dict(photo: Photo) -> dict:
    return {
        "id": photo.pk,
        "width": photo.width,
        "height": photo.height,
        "modality": photo.modality,
        "modality_display": photo.get_modality_display(),
        "name": photo.original_name,
        "created_at": photo.created_at.isoformat(),
        "url": reverse("annotation:photo_file", args=[photo.pk]),
    }


def _no_leak(response):
    """The token is in the URL: never send it on as a Referer, never cache, never index."""
    response["Referrer-Policy"] = "no-referrer"
    response["Cache-Control"] = "no-store"
    response["X-Robots-Tag"] = "noindex, nofollow"
    return response


def _hit(key: str, limit: int) -> bool:
    """Count one request in a one-minute window; True when over `limit`."""
    if cache.add(key, 1, timeout=70):
        return limit < 1
    try:
        return cache.incr(key) > limit
    except ValueError:  # expired between add and incr
        cache.add(key, 1, timeout=70)
        return False


def _rate_limited(request, token: str) -> bool:
    """Fixed-window limits on the public pages (cache-backed): per client address and
    link, and five times that per client address over all links (behind a reverse
    proxy, REMOTE_ADDR must be the phone's address for this to be per phone)."""
    limit = int(getattr(settings, "DERM_PHONE_UPLOAD_RATE_PER_MINUTE", 60))
    if limit <= 0:
        return False
    ip = request.META.get("REMOTE_ADDR", "?")
    window = int(timezone.now().timestamp() // 60)
    per_link = _hit(f"derm:phone-rl:{ip}:{services.token_hash(token)[:16]}:{window}", limit)
    per_ip = _hit(f"derm:phone-rl:{ip}:{window}", 5 * limit)
    return per_link or per_ip


# --------------------------------------------------------------------------- case panel


def case_panel(request, case) -> str:
    """DERM_CASE_PANELS entry: the "Upload from phone" button for users who may add photos."""
    if not roles.has_role(request.user, *roles.CAN_EDIT_CASES):
        return ""
    return render_to_string(
        "annotation/phone_panel.html",
        {
            "case": case,
            "active_links": services.phone_tokens_active(case=case),
            "ttl_minutes": int(services.default_ttl().total_seconds() // 60),
            "max_photos": services.default_max_photos(),
        },
        request=request,
    )


# --------------------------------------------------------------------------- desk (login)


@require_POST
def phone_token_create(request, pk: int):
    _require(request, roles.CAN_EDIT_CASES, "Your role may not add photos to cases.")
    case = selectors.case_get(user=request.user, pk=pk)
    issued = services.phone_token_create(case=case, created_by=request.user)
    url = phone_url(request, issued.raw)
    svg = qr_svg(url)
    if _wants_json(request):
        return _no_leak(
            JsonResponse(
                {
                    "url": url,
                    "svg": svg,
                    "token": _token_dict(issued.token),
                    "photos_url": reverse("annotation:case_photos_json", args=[case.pk]),
                },
                status=201,
            )
        )
    # Without JavaScript: a page that shows the code once.
    return _no_leak(
        render(request, "annotation/phone_desk.html", {"case": case, "url": url, "svg": svg, "token": issued.token})
    )


@require_POST
def phone_token_revoke(request, pk: int, token_pk: int):
    _require(request, roles.CAN_EDIT_CASES, "Your role may not manage phone links.")
    case = selectors.case_get(user=request.user, pk=pk)
    token = get_object_or_404(case.phone_tokens, pk=token_pk)
    services.phone_token_revoke(token=token, by=request.user)
    if _wants_json(request):
        return JsonResponse({"token": _token_dict(token)})
    return redirect("annotation:case_detail", pk=case.pk)


@require_GET
def case_photos_json(request, pk: int):
    """The case's photos for the desk page to poll (`?after=<photo id>` returns only
    newer ones; `?token=<id>` adds that phone link's state)."""
    _require(request, roles.CAN_VIEW_CLINICAL, "Your role may not see clinical photos.")
    case = selectors.case_get(user=request.user, pk=pk)
    photos = case.photos.order_by("id")
    after = request.GET.get("after", "")
    if after.isdigit():
        photos = photos.filter(pk__gt=int(after))
    data = {"case": case.pk, "photos": [_photo_dict(p) for p in photos[:200]]}
    token_pk = request.GET.get("token", "")
    if token_pk.isdigit():
        token = case.phone_tokens.filter(pk=int(token_pk)).first()
        data["token"] = _token_dict(token) if token else None
    response = JsonResponse(data)
    response["Cache-Control"] = "no-store"
    return response


# --------------------------------------------------------------------------- phone (public)


def _link_error(request, exc: services.PhoneLinkError):
    if _wants_json(request):
        return _no_leak(JsonResponse({"state": exc.state, "error": exc.message}, status=exc.status))
    return _no_leak(
        render(
            request, "annotation/phone_link_error.html", {"message": exc.message, "state": exc.state}, status=exc.status
        )
    )


@require_http_methods(["GET", "POST"])
def phone_upload(request, token: str):
    """The page the QR code opens. No login: the token is the credential. Shows no
    clinical data besides the case reference."""
    if _rate_limited(request, token):
        message = "Too many requests from this device. Wait a minute and try again."
        if _wants_json(request):
            return _no_leak(JsonResponse({"state": "rate_limited", "error": message}, status=429))
        return _no_leak(
            render(
                request, "annotation/phone_link_error.html", {"message": message, "state": "rate_limited"}, status=429
            )
        )
    results, reference = None, ""
    if request.method == "POST":
        files = request.FILES.getlist("photos")
        try:
            if files:
                result = services.phone_upload(
                    raw=token, uploads=files, modality=request.POST.get("modality", Modality.CLINICAL)
                )
                results, reference, status = result.as_dict(), result.reference, (201 if result.photos else 400)
            else:
                reference = services.phone_token_check(raw=token).case.reference
                results = {
                    "stored": [],
                    "errors": [
                        {"file": "", "error": "No photo was sent. Take a photo or choose one from the gallery."}
                    ],
                }
                status = 400
        except services.PhoneLinkError as exc:
            return _link_error(request, exc)
        if _wants_json(request):
            return _no_leak(JsonResponse(results, status=status))
    try:
        link = services.phone_token_check(raw=token)
    except services.PhoneLinkError as exc:
        if results is None:
            return _link_error(request, exc)
        link, done_message = None, exc.message  # the upload used the last photo: show results, then why it ends
    else:
        reference, done_message = link.case.reference, ""
    return _no_leak(
        render(
            request,
            "annotation/phone_upload.html",
            {
                "reference": reference,
                "link": link,
                "results": results,
                "done_message": done_message,
                "modalities": Modality.choices,
                "minutes_left": max(1, round((link.expires_at - timezone.now()).total_seconds() / 60)) if link else 0,
            },
        )
    )
