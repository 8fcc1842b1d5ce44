"""Error pages that answer in the caller's language: JSON for the API and the upload page's script.

Django's default handlers answer HTML even to an API client, and a database
outage surfaces as an HTML 500. Here any request under ``/api/`` (or one
that asks for JSON) gets a JSON body, and a database that cannot be reached,
or that did not answer within its timeouts (``webapp.database``), is a 503
with ``Retry-After``: the client should try again, nothing is wrong with its
request. Other database errors (a constraint, a bad query) stay a 500: trying
again would not help. Bodies are ``{"code", "error"}`` as in ``screening.api.v1``,
plus ``retry_after`` (seconds) on a 503.
"""

from __future__ import annotations

import sys

from django.db import InterfaceError, OperationalError
from django.http import HttpResponse, JsonResponse
from django.utils.html import escape
from django.utils.translation import gettext as _
from django.views import defaults

RETRY_AFTER_SECONDS = 30


def _json_error(status: int, code: str, message: str) -> JsonResponse:
    return JsonResponse({"code": code, "error": message}, status=status)


def _wants_json(request) -> bool:
    return request.path.startswith("/api/") or "application/json" in request.headers.get("Accept", "")


def bad_request(request, exception, template_name="400.html"):
    if _wants_json(request):
        detail = str(exception) or "malformed request"
        return _json_error(
            400,
            "bad_request",
            _(
                "The request could not be read (%(detail)s). File names must be short and one request may hold a "
                "limited number of files; send a zip or split the batch."
            )
            % {"detail": detail},
        )
    return defaults.bad_request(request, exception, template_name)


def permission_denied(request, exception, template_name="403.html"):
    if _wants_json(request):
        return _json_error(403, "forbidden", _("Your account may not do this."))
    return defaults.permission_denied(request, exception, template_name)


def page_not_found(request, exception, template_name="404.html"):
    if _wants_json(request):
        return _json_error(404, "not_found", _("Not found."))
    return defaults.page_not_found(request, exception, template_name)


def server_error(request, template_name="500.html"):
    # Refused, dropped, timed out (connect_timeout, statement_timeout: QueryCanceled) or closed under us.
    if isinstance(sys.exc_info()[1], (OperationalError, InterfaceError)):
        return database_unavailable(request)
    if _wants_json(request):
        return _json_error(500, "internal_error", _("Internal error; an administrator has been notified in the logs."))
    return defaults.server_error(request, template_name)


def database_unavailable(request):
    """503 with ``Retry-After``; a page without the site's layout, whose header would ask the database again."""
    message = _("The service's database is unavailable; nothing was changed. Try again shortly.")
    if _wants_json(request):
        response = JsonResponse(
            {"code": "database_unavailable", "error": message, "retry_after": RETRY_AFTER_SECONDS}, status=503
        )
    else:
        response = HttpResponse(f"<!doctype html>\n<title>503</title>\n<p>{escape(message)}</p>\n", status=503)
    response["Retry-After"] = str(RETRY_AFTER_SECONDS)
    return response
