"""Response headers and request limits that every page gets: CSP, and a cap on the request body.

Django 5.2 has no CSP support of its own (it arrives in 6.0), and our policy is
one fixed string, so a few lines here replace a dependency. The pages use no
inline script or style (the viewer sets styles through the CSSOM, which CSP
allows), so the policy can forbid both.
"""

from __future__ import annotations

from django.conf import settings


class ContentSecurityPolicyMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        response = self.get_response(request)
        response.headers.setdefault("Content-Security-Policy", settings.CONTENT_SECURITY_POLICY)
        return response


class RequestSizeLimitMiddleware:
    """413 for a request whose declared body exceeds ``SCREENING_MAX_REQUEST_BYTES``, before anything reads it.

    Per-file and per-batch limits apply while files are read; this one stops a
    single request from filling the upload spool (temporary disk) first.
    """

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        try:
            length = int(request.META.get("CONTENT_LENGTH") or 0)
        except ValueError:
            length = 0
        if length > settings.SCREENING_MAX_REQUEST_BYTES:
            from django.http import JsonResponse

            limit_mb = settings.SCREENING_MAX_REQUEST_BYTES // (1024 * 1024)
            return JsonResponse(
                {"error": f"The request is larger than {limit_mb} MB; split the batch into several uploads."},
                status=413,
            )
        return self.get_response(request)
