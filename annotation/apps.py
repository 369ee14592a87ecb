from django.apps import AppConfig


class AnnotationConfig(AppConfig):
    name = "annotation"
    verbose_name = "Cases and annotation"

    def ready(self):
        # taxonomy rows are cached for every user (derm_portal.shared_cache): a change retires the copies
        from django.db.models.signals import post_delete, post_save

        from derm_portal.shared_cache import changed

        from .models import MetaClass, SubClass, Taxonomy

        for model in (Taxonomy, MetaClass, SubClass):
            post_save.connect(changed, sender=model, dispatch_uid=f"shared-rows-save-{model.__name__}")
            post_delete.connect(changed, sender=model, dispatch_uid=f"shared-rows-delete-{model.__name__}")
