"""Import lesion boxes: a labelImg / Pascal VOC folder (or single .xml) or a COCO .json.

    manage.py import_boxes labelimg_folder/ --annotator ari [--create-cases] [--status annotated]
    manage.py import_boxes instances.json --format coco --annotator ari

Problems are printed per file and line; everything else is imported."""
from pathlib import Path

from django.contrib.auth import get_user_model
from django.core.exceptions import PermissionDenied
from django.core.management.base import BaseCommand, CommandError

from annotation.boxes import AnnotationError
from annotation.interchange import coco, limits, voc
from annotation.interchange.retry import DatabaseBusy, run_retrying
from annotation.models import AnnotationStatus


class Command(BaseCommand):
    help = __doc__

    def add_arguments(self, parser):
        parser.add_argument("path")
        parser.add_argument("--format", choices=["auto", "voc", "coco"], default="auto")
        parser.add_argument("--annotator", required=True, help="username the boxes belong to")
        parser.add_argument("--as-user", help="username running the import (default: the annotator; must be admin for "
                                              "someone else's boxes or --status accepted)")
        parser.add_argument("--status", choices=[AnnotationStatus.TO_ANNOTATE, AnnotationStatus.ANNOTATED, AnnotationStatus.ACCEPTED],
                            default=AnnotationStatus.ANNOTATED)
        parser.add_argument("--create-cases", action="store_true", help="create a case per image not yet in the portal (VOC folder)")
        parser.add_argument("--patient-prefix", default="IMPORT-")
        parser.add_argument("--replace-accepted", action="store_true")
        parser.add_argument("--retries", type=int, default=3, help="start again this often while the database is locked "
                                                                      "by another writer (embedded SQLite)")
        parser.add_argument("--retry-wait", type=float, default=2.0, help="seconds between attempts")

    def handle(self, *args, path, format, annotator, as_user, status, create_cases, patient_prefix, replace_accepted, retries, retry_wait, **opts):
        User = get_user_model()
        try:
            annotator_user = User.objects.get(username=annotator)
            user = User.objects.get(username=as_user) if as_user else annotator_user
        except User.DoesNotExist as exc:
            raise CommandError(f"unknown user: {exc}")
        p = Path(path)
        if not p.exists():
            raise CommandError(f"{p} does not exist")
        fmt = format if format != "auto" else ("coco" if p.suffix.lower() == ".json" else "voc")
        common = dict(user=user, annotator=annotator_user, status=status, replace_accepted=replace_accepted)
        def run():
            if fmt == "coco":
                limits.check_size(p.name, p.stat().st_size)  # before reading it into memory
                return coco.coco_import(data=p.read_bytes(), source=p.name, **common)
            if p.is_dir():
                return voc.voc_import_folder(folder=p, create_cases=create_cases, patient_prefix=patient_prefix, **common)
            return voc.voc_import(files=[(p.name, p.read_bytes())], **common)

        def say_retry(attempt: int, of: int) -> None:
            self.stderr.write(f"The database is locked by another writer; starting again in {retry_wait:g} s "
                              f"(attempt {attempt} of {of}).")

        try:
            report = run_retrying(run, retries=max(0, retries), wait=retry_wait, on_retry=say_retry)
        except (AnnotationError, PermissionDenied) as exc:
            raise CommandError(str(exc))
        except DatabaseBusy as exc:
            raise CommandError(f"{p.name}: {exc}")
        for e in report.errors:
            where = f"{e['file']}:{e['line']}" if e["line"] else e["file"]
            self.stderr.write(f"{where}: {e['message']}")
        self.stdout.write(self.style.SUCCESS(report.summary()))
