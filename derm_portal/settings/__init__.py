from django.core.exceptions import ImproperlyConfigured


class SettingsRefused(ImproperlyConfigured):
    """A setting is missing or unsafe for the chosen settings module. str() says what to set."""
