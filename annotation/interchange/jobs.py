"""Box imports too large to run within a web request: the file is stored, an ImportRun is
queued, and a worker on the `long` queue imports it, writing its progress and report to the run.
The run carries how to import: annotator, status, replace_accepted, the label mapping (as
name -> taxonomy code, resolved again when the worker runs) and the dry-run flag."""

from __future__ import annotations

import io
import json
import logging
import zipfile
from datetime import timedelta
from pathlib import PurePath, PureWindowsPath

from celery import shared_task
from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.exceptions import PermissionDenied
from django.core.files.base import ContentFile
from django.db import transaction
from django.utils import timezone

from derm_portal import dispatch, roles

from ..box_validation import AnnotationError, LabelRef, label_index
from ..models import AnnotationStatus, ImportRun
from .coco import coco_import
from .limits import check_size
from .mapping import mapping_codes, mapping_parse, with_mapping
from .store import check_import_rights, dry_run

log = logging.getLogger(__name__)

# A running import with no progress written for this long has lost its worker: the reconciler resends it.
IMPORT_STALE = timedelta(seconds=int(getattr(settings, "DERM_IMPORT_STALE_SECONDS", 600)))
# Workers that may start one run; a file that kills every worker (memory) is then failed, not resent forever.
IMPORT_MAX_ATTEMPTS = int(getattr(settings, "DERM_IMPORT_MAX_ATTEMPTS", 3))


def box_import_enqueue(
    *,
    data: bytes,
    source: str,
    user,
    annotator=None,
    status: str = AnnotationStatus.ANNOTATED,
    replace_accepted: bool = False,
    mapping: dict[str, LabelRef] | None = None,
    trial: bool = False,
    images: dict[str, bytes] | None = None,
    create_cases: bool = False,
) -> ImportRun:
    """Queue a COCO file for import on the long queue; rights and size are checked now.
    `mapping` (mapping.mapping_parse) maps the file's class names; `trial` makes it a dry run;
    with `create_cases` the `images` (file name -> bytes) are stored with the file, in one zip."""
    annotator = annotator or user
    check_import_rights(user, annotator, status)
    if create_cases and not roles.has_role(user, roles.CAN_EDIT_CASES):
        raise PermissionDenied("Your role may not create cases.")
    check_size(source, len(data))
    options = {"annotator": annotator.pk, "status": status, "replace_accepted": replace_accepted, "dry_run": trial}
    if mapping:
        options["map"] = mapping_codes(mapping)
    stored_name, stored = "boxes.json", data
    if create_cases:
        options["create_cases"] = True
        stored_name, stored = "boxes.zip", _zip_with_images(data, images or {})
    with transaction.atomic():
        run = ImportRun(
            path=source[:500],
            kind="coco",
            status=ImportRun.Status.QUEUED,
            started_by=user,
            options=options,
        )
        run.upload.save(stored_name, ContentFile(stored), save=False)
        run.save()
        # a broker that is down leaves the run queued for the reconciler (derm_portal.reconcile)
        transaction.on_commit(lambda pk=run.pk: dispatch.send(import_boxes_task.name, run_pk=pk))
    return run


def _zip_with_images(data: bytes, images: dict[str, bytes]) -> bytes:
    """The COCO file as boxes.json and each image as images/<its base name>, uncompressed (photos are)."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as z:
        z.writestr("boxes.json", data)
        for name, content in images.items():
            z.writestr(f"images/{PureWindowsPath(name).name}", content)  # base name of a / or \ path
    return out.getvalue()


def _read_stored(raw: bytes, with_images: bool) -> tuple[bytes, dict[str, bytes]]:
    """(COCO bytes, images) of a stored upload: a plain COCO file, or (``with_images``, a run that
    creates cases) the zip of _zip_with_images."""
    if not with_images:
        return raw, {}
    with zipfile.ZipFile(io.BytesIO(raw)) as z:
        images = {PurePath(n).name: z.read(n) for n in z.namelist() if n.startswith("images/") and not n.endswith("/")}
        return z.read("boxes.json"), images


def _claim(run_pk: int, task_id: str) -> tuple[ImportRun | None, str]:
    """Lock the run and mark it running for this attempt, or say why not: skipped (missing, done or
    failed), busy (a live worker imports it: a duplicate send) or failed (too many attempts)."""
    with transaction.atomic():
        run = ImportRun.objects.select_for_update().filter(pk=run_pk).first()
        if run is None or run.status in (ImportRun.Status.DONE, ImportRun.Status.FAILED):
            return None, "skipped"
        now = timezone.now()
        if run.status == ImportRun.Status.RUNNING:
            same_message = bool(task_id) and run.options.get("task_id") == task_id
            if not same_message and (run.heartbeat_at or run.started_at) > now - IMPORT_STALE:
                return None, "busy"
            log.warning("import run %s: taking over from a dead worker (last sign %s)", run.pk, run.heartbeat_at)
        if run.attempts >= IMPORT_MAX_ATTEMPTS:
            run.status, run.finished_at = ImportRun.Status.FAILED, now
            run.summary = {
                "failure": f"given up after {run.attempts} attempts: each time the worker stopped or hit an "
                "unexpected error before finishing (see the worker log). Import the file again, split if it is large."
            }
            run.save(update_fields=["status", "finished_at", "summary"])
            return None, "failed"
        run.status, run.progress = ImportRun.Status.RUNNING, {"stage": "reading", "done": 0, "total": 0}
        run.options = {**run.options, "task_id": task_id}
        run.heartbeat_at, run.attempts = now, run.attempts + 1
        run.save(update_fields=["status", "progress", "options", "heartbeat_at", "attempts"])
    return run, "claimed"


def _drop_upload(run_pk: int) -> None:
    run = ImportRun.objects.filter(pk=run_pk).first()
    if run is not None and run.upload:
        run.upload.delete(save=False)
        ImportRun.objects.filter(pk=run_pk).update(upload="")


def box_import_run(*, run_pk: int, task_id: str = "") -> str:
    """Import a queued run. Safe to run twice: a run already done or failed (e.g. a redelivered task)
    is left as it is; a run whose worker died (its own message redelivered, or the reconciler's resend
    once its heartbeat is older than IMPORT_STALE) is imported again, which replaces that annotator's
    boxes on each photo, so no box is stored twice; a duplicate send while a live worker imports it
    finds it busy. After IMPORT_MAX_ATTEMPTS dead workers the run is failed with a message."""
    run, state = _claim(run_pk, task_id)
    if state == "failed":
        _drop_upload(run_pk)
    if run is None:
        return state

    last = dict(run.progress)

    def progress(stage: str, done: int, total: int) -> None:
        # a dry run's writes (these included) are rolled back: the last one is written again at the end
        last.update(stage=stage, done=done, total=total)
        ImportRun.objects.filter(pk=run_pk).update(progress=last, heartbeat_at=timezone.now())

    users = get_user_model().objects
    try:
        with run.upload.open("rb") as fh:
            data, images = _read_stored(fh.read(), run.options.get("create_cases", False))
        labels = label_index()
        if run.options.get("map"):
            codes = run.options["map"]
            labels = with_mapping(labels, mapping_parse(json.dumps(codes), source="the label mapping", labels=labels))

        def one_run():
            return coco_import(
                data=data,
                source=run.path,
                user=run.started_by,
                annotator=users.get(pk=run.options["annotator"]),
                status=run.options["status"],
                replace_accepted=run.options.get("replace_accepted", False),
                labels=labels,
                progress=progress,
                images=images,
                create_cases=run.options.get("create_cases", False),
            )

        report = dry_run(one_run) if run.options.get("dry_run") else one_run()
        summary, state = {**report.as_dict(), "text": report.summary()}, ImportRun.Status.DONE
    except (AnnotationError, PermissionDenied, get_user_model().DoesNotExist) as exc:
        summary, state = {"failure": str(exc)}, ImportRun.Status.FAILED
    except FileNotFoundError:
        summary, state = {"failure": "the queued file is missing from storage."}, ImportRun.Status.FAILED
    # the outcome first, the file after: a worker dying in between leaves a finished run, not a lost file;
    # a second worker that took over finds the run finished and leaves the first one's outcome alone
    running = ImportRun.objects.filter(pk=run_pk, status=ImportRun.Status.RUNNING)
    if running.update(status=state, summary=summary, progress=last, finished_at=timezone.now()):
        _drop_upload(run_pk)
    return state


def box_import_runs(*, user, limit: int = 10) -> list[ImportRun]:
    """The user's latest queued box imports, newest first."""
    return list(ImportRun.objects.filter(started_by=user, kind="coco").order_by("-started_at", "-id")[:limit])


@shared_task(bind=True, name="annotation.tasks.import_boxes")
def import_boxes_task(self, *, run_pk: int) -> str:
    return box_import_run(run_pk=run_pk, task_id=self.request.id or "")
