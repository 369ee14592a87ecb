import os

from django.core.wsgi import get_wsgi_application

# Production unless told otherwise: `./run serve` and the tests name their settings.
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "derm_portal.settings.production")
application = get_wsgi_application()
