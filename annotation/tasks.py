"""Celery tasks of the annotation app (found by autodiscovery; all routed to the `long` queue)."""

from .crops import make_crops_task
from .interchange.jobs import import_boxes_task

__all__ = ["import_boxes_task", "make_crops_task"]
