"""List, and with --delete remove, stored files that no row refers to (left by an interrupted import)."""

from datetime import timedelta

from django.core.management.base import BaseCommand, CommandError

from derm_portal.stray_files import remove, stray_files


class Command(BaseCommand):
    help = (
        "Stored files no row refers to (e.g. photos of an import killed between writing its files and "
        "committing their rows). Lists them; --delete removes them. Files younger than --min-age-minutes "
        "are left alone, so a job writing right now keeps its files."
    )

    def add_arguments(self, parser):
        parser.add_argument("--delete", action="store_true", help="remove the files listed")
        parser.add_argument("--min-age-minutes", type=float, default=60.0)
        parser.add_argument("--show", type=int, default=20, help="how many names to print")

    def handle(self, *args, delete=False, min_age_minutes=60.0, show=20, **options):
        if min_age_minutes < 0:
            raise CommandError("--min-age-minutes must be 0 or more")
        files = stray_files(min_age=timedelta(minutes=min_age_minutes))
        size = sum(f.size for f in files)
        self.stdout.write(
            f"{len(files)} stored file(s) no row refers to, {size / 1e6:.1f} MB, older than {min_age_minutes:g} min"
        )
        for f in files[:show]:
            self.stdout.write(f"  {f.name}  {f.size} bytes  {f.modified:%Y-%m-%d %H:%M}")
        if len(files) > show:
            self.stdout.write(f"  ... and {len(files) - show} more")
        if delete and files:
            self.stdout.write(f"removed {remove(files)} file(s)")
        elif files:
            self.stdout.write("nothing removed; run again with --delete to remove them")
