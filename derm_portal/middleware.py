"""Everything needs a login, except the login page itself, static files and the
token-authenticated phone-upload pages (which check their own token)."""
from django.conf import settings
from django.contrib.auth.views import redirect_to_login
from django.http import JsonResponse

PUBLIC_PREFIXES = ("/accounts/login/", "/static/", "/m/", "/favicon.ico", "/healthz")


class LoginRequiredMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        if request.user.is_authenticated or request.path.startswith(PUBLIC_PREFIXES):
            return self.get_response(request)
        if request.path.startswith("/api/"):
            # DRF answers 401/403 itself (it also accepts basic auth).
            return self.get_response(request)
        if request.headers.get("x-requested-with") == "XMLHttpRequest":
            return JsonResponse({"detail": "Login required."}, status=401)
        return redirect_to_login(request.get_full_path(), settings.LOGIN_URL)
