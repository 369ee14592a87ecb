from django.apps import AppConfig


class InferenceConfig(AppConfig):
    name = "inference"
    verbose_name = "Inference: models and predictions"

    def ready(self):
        from django.db.models.signals import post_delete, post_save

        from derm_portal.shared_cache import changed

        # registers the Celery tasks in every process, so inference.jobs finds them by name
        from . import tasks  # noqa: F401
        from .models import ModelVersion

        # the active model row is cached for every user (derm_portal.shared_cache): a change retires the copy
        post_save.connect(changed, sender=ModelVersion, dispatch_uid="shared-rows-save-ModelVersion")
        post_delete.connect(changed, sender=ModelVersion, dispatch_uid="shared-rows-delete-ModelVersion")
