import sys

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError
from tqdm import tqdm

from annotation.interchange.dataset import ImportErrorFatal, import_dataset
from annotation.services import taxonomy_load_default


class Command(BaseCommand):
    help = (
        "Import a HAM10000-style (metadata.csv) or generic (labels.csv) photo folder. Every row is checked first; "
        "any bad row is listed with its line and nothing is imported. Then rows are written in chunks that commit "
        "one by one: re-running after an interruption resumes. Idempotent."
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
        bars: dict[str, tqdm] = {}

        def progress(stage, done, total):  # one bar per stage, with its rate and time left
            if no_progress:
                return
            if stage not in bars:
                for old in bars.values():
                    old.close()
                label = {"check": "checking photos", "write": "writing"}.get(stage, stage)
                bars[stage] = tqdm(total=total, desc=label, unit="row", file=sys.stderr, dynamic_ncols=True)
            bars[stage].update(done - bars[stage].n)

        try:
            summary = import_dataset(
                folder, user=who, modality=modality, patient_prefix=patient_prefix, progress=progress
            )
        except ImportErrorFatal as exc:
            raise CommandError(str(exc))
        finally:
            for bar in bars.values():
                bar.close()
        self.stdout.write(summary.text())
