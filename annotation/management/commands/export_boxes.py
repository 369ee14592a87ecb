"""Export lesion boxes as labelImg / Pascal VOC XML (a folder, one file per photo),
COCO JSON or CSV. One annotation per photo: the gold one, else an accepted one.

    manage.py export_boxes --format voc --out exported/Annotations
    manage.py export_boxes --format coco --out boxes.json --status accepted annotated
    manage.py export_boxes --format voc --with-images --out labelimg.zip   (photos next to their XML)
    manage.py export_boxes --format yolo [--with-images] --out yolo.zip
"""

from pathlib import Path

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from annotation.interchange import export
from annotation.models import AnnotationStatus


class Command(BaseCommand):
    help = __doc__

    def add_arguments(self, parser):
        parser.add_argument("--format", choices=["voc", "coco", "csv", "yolo"], required=True)
        parser.add_argument("--with-images", action="store_true", help="voc/yolo: write a zip (--out) with the photos")
        parser.add_argument("--out", required=True)
        parser.add_argument("--status", nargs="+", default=[AnnotationStatus.ACCEPTED], choices=AnnotationStatus.values)
        parser.add_argument("--annotator", help="only this annotator's boxes")
        parser.add_argument("--as-user", default=None, help="whose visibility applies (default: first admin)")

    def handle(self, *args, format, out, status, annotator, as_user, with_images, **opts):
        User = get_user_model()
        user = (
            User.objects.filter(username=as_user).first()
            if as_user
            else (User.objects.filter(is_superuser=True).first() or User.objects.filter(groups__name="admin").first())
        )
        if user is None:
            raise CommandError("no admin user to export as; pass --as-user")
        ann_user = None
        if annotator:
            ann_user = User.objects.filter(username=annotator).first()
            if ann_user is None:
                raise CommandError(f"unknown annotator {annotator}")
        anns = export.annotations_for_export(user=user, statuses=status, annotator=ann_user)
        out_path = Path(out)
        if format == "yolo":
            from annotation.interchange.yolo import export_yolo_zip

            out_path.write_bytes(export_yolo_zip(anns, with_images=with_images))
        elif format == "voc" and with_images:
            out_path.write_bytes(export.export_voc_zip(anns, with_images=True))
        elif format == "voc":
            out_path.mkdir(parents=True, exist_ok=True)
            files = export.export_voc(anns)
            for name, data in files.items():
                (out_path / name).write_bytes(data)
        elif format == "coco":
            import json

            out_path.write_text(json.dumps(export.export_coco(anns), indent=1))
        else:
            out_path.write_text(export.export_csv(anns))
        self.stdout.write(self.style.SUCCESS(f"{len(anns)} photo(s) exported as {format} to {out_path}"))
