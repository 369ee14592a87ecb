import json
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from annotation.services import TaxonomyError, taxonomy_import, taxonomy_load_default


class Command(BaseCommand):
    help = "Load the default HAM10000 taxonomy (idempotent), or a taxonomy JSON file as a new version."

    def add_arguments(self, parser):
        parser.add_argument("file", nargs="?")
        parser.add_argument("--default", action="store_true", help="make the loaded taxonomy the default")

    def handle(self, *args, file=None, default=False, **options):
        if not file:
            tax = taxonomy_load_default()
            self.stdout.write(f"Default taxonomy: {tax}")
            return
        try:
            data = json.loads(Path(file).read_text(encoding="utf-8"))
            tax = taxonomy_import(data=data, make_default=default)
        except (OSError, json.JSONDecodeError) as exc:
            raise CommandError(f"{file}: {exc}")
        except TaxonomyError as exc:
            raise CommandError(f"{file}: {exc}")
        self.stdout.write(f"Loaded {tax}")
