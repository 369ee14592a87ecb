"""python manage.py register_model MODEL_DIR [--name NAME] [--activate [--reason TEXT]] [--recompute]"""

from django.core.management.base import BaseCommand, CommandError

from inference import services


class Command(BaseCommand):
    help = "Register an inference.ml model artefact (directory with model.json) as a model version."

    def add_arguments(self, parser):
        parser.add_argument("model_dir")
        parser.add_argument("--name", default="")
        parser.add_argument("--activate", action="store_true", help="make it the active model of its taxonomy")
        parser.add_argument(
            "--reason",
            default="",
            help="with --activate: why a model below the tier targets or trained on too few photos "
            "of a class is activated anyway (required for such a model; logged)",
        )
        parser.add_argument(
            "--recompute", action="store_true", help="with --activate: compute predictions for all photos (long queue)"
        )

    def handle(self, model_dir, name, activate, recompute, reason, **opts):
        try:
            mv = services.model_register(model_dir=model_dir, name=name)
            if activate:
                mv = services.model_activate(
                    model_version=mv, by=None, note="register_model --activate", recompute=recompute, reason=reason
                )
        except services.ActivationReasonRequired as exc:
            raise CommandError(f"{exc} Pass --reason TEXT to activate it anyway (the reason is logged).")
        except services.RegistryError as exc:
            raise CommandError(str(exc))
        s = mv.metrics.get("hierarchical_product", {}) if mv.metrics else {}
        self.stdout.write(
            self.style.SUCCESS(
                f"model version {mv.pk} '{mv.name}' for taxonomy {mv.taxonomy} ({mv.status}); "
                f"artefact {mv.artefact_path}; test accuracy {s.get('accuracy', 'n/a')}, macro F1 {s.get('macro_f1', 'n/a')}"
            )
        )
