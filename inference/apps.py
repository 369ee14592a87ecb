from django.apps import AppConfig


class InferenceConfig(AppConfig):
    name = "inference"
    verbose_name = "Inference: models and predictions"

    def ready(self):
        # registers the Celery tasks in every process, so inference.jobs finds them by name
        from . import tasks  # noqa: F401
