from django.apps import AppConfig


class DermPortalConfig(AppConfig):
    name = "derm_portal"
    verbose_name = "Derm Portal"
