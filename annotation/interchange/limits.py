"""Caps on what one box import may carry, so no single file can hold a worker for long.
Each can be changed in settings (DERM_BOX_IMPORT_*)."""

from __future__ import annotations

from django.conf import settings

from ..box_validation import AnnotationError

DEFAULTS = {
    "MAX_BYTES": 64 * 1024 * 1024,  # one COCO file, or all VOC files of one import together
    "MAX_IMAGES": 100_000,  # COCO "images" entries / VOC files
    "MAX_ANNOTATIONS": 500_000,  # COCO "annotations" entries
    "INLINE_BYTES": 2 * 1024 * 1024,  # a larger upload from the web page runs on the long queue
}


def limit(name: str) -> int:
    return int(getattr(settings, f"DERM_BOX_IMPORT_{name}", DEFAULTS[name]))


class ImportTooLarge(AnnotationError):
    """The file is over a cap; the message names the file, the cap and the setting."""


def check_size(source: str, n_bytes: int) -> None:
    cap = limit("MAX_BYTES")
    if n_bytes > cap:
        raise ImportTooLarge(
            f"{source}: {n_bytes / 1e6:.1f} MB is over the import limit of {cap / 1e6:.0f} MB "
            f"(DERM_BOX_IMPORT_MAX_BYTES); split the file."
        )


def check_count(source: str, what: str, n: int, name: str) -> None:
    cap = limit(name)
    if n > cap:
        raise ImportTooLarge(
            f"{source}: {n:,} {what} is over the import limit of {cap:,} (DERM_BOX_IMPORT_{name}); split the file."
        )
