from django.core.management.base import BaseCommand

from annotation.demo import DEMO_USERS, demo_password, seed_demo


class Command(BaseCommand):
    help = "Create demo users for every role and a few demo cases with generated photos (idempotent)."

    def add_arguments(self, parser):
        parser.add_argument("--cases", type=int, default=8)

    def handle(self, *args, cases, **options):
        result = seed_demo(cases=cases)
        self.stdout.write(f"Demo cases created: {result['cases_created']}")
        self.stdout.write("Demo accounts (local demo database only):")
        for username, _, _, role in DEMO_USERS:
            self.stdout.write(f"  {username:8s} / {demo_password(username):14s} {role}")
