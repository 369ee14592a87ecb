"""Request guards: everything needs a login (except the login page, static files and the
token-authenticated phone-upload pages, which check their own token); a NUL byte in a
query string is a 400; the client address is taken from trusted proxies only."""

from django.conf import settings
from django.contrib.auth.views import redirect_to_login
from django.http import HttpResponseBadRequest, JsonResponse

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


class RejectNulMiddleware:
    """A NUL character in the query string is never a valid filter (PostgreSQL refuses it
    in any text parameter): answer 400 instead of letting a query fail with a 500."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        for key, values in request.GET.lists():
            if "\x00" in key or any("\x00" in v for v in values):
                message = f'The query parameter "{key.replace(chr(0), "")}" contains a NUL character (%00), which no filter accepts.'
                if request.path.startswith("/api/"):
                    return JsonResponse({"detail": message}, status=400)
                return HttpResponseBadRequest(message, content_type="text/plain; charset=utf-8")
        return self.get_response(request)


class TrustedProxyMiddleware:
    """Behind DERM_TRUSTED_PROXY_COUNT reverse proxies, set REMOTE_ADDR to the client's
    address from X-Forwarded-For (the entry that many hops from the right), so login
    lockout and rate limits count per client, not per proxy. 0 (default): untouched."""

    def __init__(self, get_response):
        self.get_response = get_response
        self.count = int(getattr(settings, "DERM_TRUSTED_PROXY_COUNT", 0))

    def __call__(self, request):
        if self.count > 0:
            hops = [h.strip() for h in request.META.get("HTTP_X_FORWARDED_FOR", "").split(",") if h.strip()]
            if len(hops) >= self.count:
                request.META["REMOTE_ADDR"] = hops[-self.count]
        return self.get_response(request)
