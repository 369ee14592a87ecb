"""Responses shared by the apps."""

from __future__ import annotations

from django.http import FileResponse, HttpResponse
from django.utils.http import content_disposition_header


def private_file_response(
    content,
    *,
    content_type: str | None = None,
    max_age: int = 300,
    filename: str | None = None,
    attachment: bool = True,
) -> HttpResponse:
    """A file served after a permission check: ``content`` is bytes or an open binary file (streamed).
    Only the user's own browser may keep it (``private``), for ``max_age`` seconds (0: not stored at
    all), and it is never content-sniffed. With ``filename`` it is a download under that name
    (``attachment=False``: shown in the browser, saved under that name)."""
    if isinstance(content, (bytes, bytearray)):
        response = HttpResponse(content, content_type=content_type)
        if filename:
            response["Content-Disposition"] = content_disposition_header(attachment, filename)
    else:
        response = FileResponse(
            content, content_type=content_type, as_attachment=bool(filename) and attachment, filename=filename or ""
        )
    response["Cache-Control"] = f"private, max-age={max_age}" if max_age > 0 else "private, no-store"
    response["X-Content-Type-Options"] = "nosniff"
    return response
