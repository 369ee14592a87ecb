"""The one DRF router of the portal. Each app contributes its viewsets in
`<app>/api/routes.py` as a `register(router)` function."""

import importlib

from rest_framework.routers import DefaultRouter

router = DefaultRouter()
for _app in ("annotation", "inference", "reports"):
    try:
        _routes = importlib.import_module(f"{_app}.api.routes")
    except ModuleNotFoundError:
        continue
    _routes.register(router)

urlpatterns = router.urls
