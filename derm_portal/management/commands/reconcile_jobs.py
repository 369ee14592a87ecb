"""One reconciler pass from the command line (what Celery beat runs every DERM_RECONCILE_SECONDS)."""

from django.core.management.base import BaseCommand

from derm_portal.reconcile import reconcile


class Command(BaseCommand):
    help = "Send again the pending/stale predictions, queued training and import runs and unserved crop requests."

    def handle(self, *args, **options):
        sent = reconcile()
        self.stdout.write(", ".join(f"{k}: {v}" for k, v in sent.items()))
