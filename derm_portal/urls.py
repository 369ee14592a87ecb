from django.conf import settings
from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.http import HttpResponse
from django.urls import include, path, re_path
from django.views.static import serve as static_serve
from drf_spectacular.views import SpectacularAPIView, SpectacularRedocView, SpectacularSwaggerView

from . import views

urlpatterns = [
    path("", views.home, name="home"),
    path("healthz", lambda r: HttpResponse("ok", content_type="text/plain")),
    path("accounts/login/", auth_views.LoginView.as_view(), name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("django-admin/", admin.site.urls),
    path("api/", include("derm_portal.api_urls")),
    path("api/schema/", SpectacularAPIView.as_view(), name="api-schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="api-schema"), name="api-docs"),
    path("api/redoc/", SpectacularRedocView.as_view(url_name="api-schema"), name="api-redoc"),
    path("", include("annotation.urls")),
]

# Apps added later register their pages here (kept optional so each app can land alone).
for _module in ("inference.urls", "reports.urls"):
    try:
        __import__(_module)
    except ModuleNotFoundError:
        continue
    urlpatterns.append(path("", include(_module)))

# Production without a static-file proxy: the web process serves collectstatic's output.
if getattr(settings, "DERM_SERVE_STATIC", False) and not settings.DEBUG:
    urlpatterns.insert(0, re_path(r"^static/(?P<path>.*)$", static_serve, {"document_root": settings.STATIC_ROOT}))
