"""Import lesion boxes: a labelImg / Pascal VOC folder (or single .xml) or a COCO .json.

    manage.py import_boxes labelimg_folder/ --annotator ari [--create-cases] [--status annotated]
    manage.py import_boxes instances.json --format coco --annotator ari
    manage.py import_boxes labelimg_folder/ --annotator ari --map labels.txt --dry-run

--map FILE maps other tools' class names onto the taxonomy (`marlboro = nv`, `#0 = mel` for
a COCO category id); --dry-run reports what would be imported and stores nothing.

Problems are printed per file and line; everything else is imported."""

from pathlib import Path

from django.contrib.auth import get_user_model
from django.core.exceptions import PermissionDenied
from django.core.management.base import BaseCommand, CommandError

from annotation.boxes import AnnotationError, label_index
from annotation.interchange import coco, limits, voc
from annotation.interchange.mapping import mapping_parse, with_mapping
from annotation.interchange.matching import IMAGE_EXTS
from annotation.interchange.retry import DatabaseBusy, run_retrying
from annotation.interchange.store import dry_run as dry_run_of
from annotation.models import AnnotationStatus


class Command(BaseCommand):
    help = __doc__

    def add_arguments(self, parser):
        parser.add_argument("path")
        parser.add_argument(
            "--format",
            choices=["auto", "voc", "coco", "yolo"],
            default="auto",
            help="yolo: a zip or folder with classes.txt and one .txt per image",
        )
        parser.add_argument("--annotator", required=True, help="username the boxes belong to")
        parser.add_argument(
            "--as-user",
            help="username running the import (default: the annotator; must be admin for "
            "someone else's boxes or --status accepted)",
        )
        parser.add_argument(
            "--status",
            choices=[AnnotationStatus.TO_ANNOTATE, AnnotationStatus.ANNOTATED, AnnotationStatus.ACCEPTED],
            default=AnnotationStatus.ANNOTATED,
        )
        parser.add_argument(
            "--create-cases",
            action="store_true",
            help="create a case per image not yet in the portal (VOC folder, or COCO with the images next to the .json)",
        )
        parser.add_argument("--patient-prefix", default="IMPORT-")
        parser.add_argument("--replace-accepted", action="store_true")
        parser.add_argument(
            "--map", dest="map_file", help="label mapping file: one 'their name = taxonomy code' per line"
        )
        parser.add_argument("--dry-run", action="store_true", help="report what would be imported; store nothing")
        parser.add_argument(
            "--retries",
            type=int,
            default=3,
            help="start again this often while the database is locked by another writer (embedded SQLite)",
        )
        parser.add_argument("--retry-wait", type=float, default=2.0, help="seconds between attempts")

    def handle(
        self,
        *args,
        path,
        format,
        annotator,
        as_user,
        status,
        create_cases,
        patient_prefix,
        replace_accepted,
        retries,
        retry_wait,
        map_file,
        dry_run,
        **opts,
    ):
        User = get_user_model()
        try:
            annotator_user = User.objects.get(username=annotator)
            user = User.objects.get(username=as_user) if as_user else annotator_user
        except User.DoesNotExist as exc:
            raise CommandError(f"unknown user: {exc}")
        p = Path(path)
        if not p.exists():
            raise CommandError(f"{p} does not exist")
        fmt = format if format != "auto" else {".json": "coco", ".zip": "yolo"}.get(p.suffix.lower(), "voc")
        try:
            labels = label_index()
            if map_file:
                m = Path(map_file)
                if not m.is_file():
                    raise CommandError(f"mapping file {m} does not exist")
                try:
                    text = m.read_text(encoding="utf-8-sig")
                except UnicodeDecodeError:
                    raise CommandError(f"mapping file {m.name} is not UTF-8 text")
                labels = with_mapping(labels, mapping_parse(text, source=m.name, labels=labels))
        except AnnotationError as exc:
            raise CommandError(str(exc))
        common = dict(
            user=user, annotator=annotator_user, status=status, replace_accepted=replace_accepted, labels=labels
        )

        def run():
            return dry_run_of(import_once) if dry_run else import_once()

        def import_once():
            if fmt == "yolo":
                from annotation.interchange import yolo

                classes, files = (
                    yolo.yolo_files_from_folder(p) if p.is_dir() else yolo.yolo_files_from_zip(p.read_bytes(), p.name)
                )
                return yolo.yolo_import(files=files, classes=classes, **common)
            if fmt == "coco":
                limits.check_size(p.name, p.stat().st_size)  # before reading it into memory
                images = None
                if create_cases:  # the images next to the .json (and below it)
                    images = {
                        str(f.relative_to(p.parent)): f
                        for f in sorted(p.parent.rglob("*"))
                        if f.suffix.lower() in IMAGE_EXTS
                    }
                return coco.coco_import(
                    data=p.read_bytes(),
                    source=p.name,
                    images=images,
                    create_cases=create_cases,
                    patient_prefix=patient_prefix,
                    **common,
                )
            if p.is_dir():
                return voc.voc_import_folder(
                    folder=p, create_cases=create_cases, patient_prefix=patient_prefix, **common
                )
            return voc.voc_import(files=[(p.name, p.read_bytes())], **common)

        def say_retry(attempt: int, of: int) -> None:
            self.stderr.write(
                f"The database is locked by another writer; starting again in {retry_wait:g} s "
                f"(attempt {attempt} of {of})."
            )

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
