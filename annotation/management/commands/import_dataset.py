import sys

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError
from tqdm import tqdm

from annotation.interchange.dataset import ImportErrorFatal, import_dataset
from annotation.services import taxonomy_load_default


class Command(BaseCommand):
    help = (
        "Import a HAM10000-style (metadata.csv) or generic (labels.csv) photo folder. Every row is checked first; "
        "any bad row is listed with its line and nothing is imported. Idempotent."
    )

    def add_arguments(self, parser):
        parser.add_argument("folder")
        parser.add_argument("--user", help="username recorded as creator", default=None)
        parser.add_argument("--modality", choices=["clinical", "dermoscopic"], default=None)
        parser.add_argument("--patient-prefix", default=None)
        parser.add_argument("--no-progress", action="store_true")

    def handle(self, *args, folder, user, modality, patient_prefix, no_progress, **options):
        taxonomy_load_default()
        who = get_user_model().objects.filter(username=user).first() if user else None
        bar = None if no_progress else tqdm(unit="row", file=sys.stderr, dynamic_ncols=True)

        def progress(done, total):
            if bar is not None:
                bar.total = total
                bar.update(done - bar.n)

        try:
            summary = import_dataset(
                folder, user=who, modality=modality, patient_prefix=patient_prefix, progress=progress
            )
        except ImportErrorFatal as exc:
            raise CommandError(str(exc))
        finally:
            if bar is not None:
                bar.close()
        self.stdout.write(summary.text())
