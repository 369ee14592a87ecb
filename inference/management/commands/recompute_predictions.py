"""python manage.py recompute_predictions [--model PK] [--case PK] [--force] [--enqueue]"""

from django.core.management.base import BaseCommand, CommandError

from inference import services
from inference.models import ModelVersion


class Command(BaseCommand):
    help = "Compute predictions of a model (default: the active one) for photos that lack one."

    def add_arguments(self, parser):
        parser.add_argument("--model", type=int, help="ModelVersion pk (default: the active model)")
        parser.add_argument("--case", type=int, help="only the photos of this case")
        parser.add_argument("--force", action="store_true", help="recompute done predictions too")
        parser.add_argument(
            "--enqueue", action="store_true", help="send one job to the long queue instead of running here"
        )

    def handle(self, model=None, case=None, force=False, enqueue=False, **opts):
        mv = ModelVersion.objects.filter(pk=model).first() if model else services.model_active_for()
        if mv is None:
            raise CommandError("No such model / no active model.")
        if enqueue:
            from inference.tasks import run_recompute

            run_recompute.delay(mv.pk, case, force)
            self.stdout.write(f"enqueued recompute of model {mv.pk}")
            return
        counts = services.photos_recompute(model_version=mv, case_pk=case, force=force, task_id="command-line")
        self.stdout.write(self.style.SUCCESS(f"model {mv.pk}: {counts or 'nothing to do'}"))
