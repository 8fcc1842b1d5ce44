"""The Content-Security-Policy header on every response.

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
