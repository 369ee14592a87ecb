"""Cut training crops out of photos by their accepted boxes and optionally export them
as an inference.ml data folder (labels.csv image,label,case_id + images/).

    manage.py make_crops --margin 0.1 --min-size 32 --export var/crops-dataset
"""

from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from annotation import crops


class Command(BaseCommand):
    help = __doc__

    def add_arguments(self, parser):
        parser.add_argument(
            "--margin", type=float, default=0.0, help="fraction of the box size added on each side (0.1 = 10%%)"
        )
        parser.add_argument(
            "--min-size", type=int, default=0, help="skip boxes whose shorter side is below this many pixels"
        )
        parser.add_argument("--export", help="also write the crops as an inference.ml data folder here")
        parser.add_argument("--level", choices=["sub", "meta"], default="sub", help="label written to labels.csv")

    def handle(self, *args, margin, min_size, export, level, **opts):
        try:
            report = crops.crops_make(margin=margin, min_size=min_size)
        except ValueError as exc:
            raise CommandError(str(exc))
        self.stdout.write(self.style.SUCCESS(report.summary()))
        if export:
            res = crops.crops_export_folder(folder=Path(export), level=level, margin=margin)
            self.stdout.write(
                self.style.SUCCESS(
                    f"{res['crops']} crop(s) written to {res['folder']} (labels.csv + images/)"
                    + (
                        f"; {res['skipped_meta_only']} meta-only crop(s) left out at sub-class level"
                        if res["skipped_meta_only"]
                        else ""
                    )
                )
            )
