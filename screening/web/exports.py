"""CSV exports of scored and reviewed studies, for audits and follow-up.

Every export starts with the intended-use line, so a spreadsheet passed
around the hospital still says what the numbers are and are not.
"""

from __future__ import annotations

import csv

from django.db.models import Prefetch, QuerySet
from django.http import StreamingHttpResponse

from screening.models import Review, Study


def intended_use_line() -> str:
    from screening.population import population_summary
    from screening.served_model import model_card
    from screening.web.context_processors import FALLBACK_POPULATION

    population = population_summary(model_card(), FALLBACK_POPULATION)
    return f"# Decision support for triage, not a diagnosis. Model validated on {population}; see the model card."


COLUMNS = [
    "study",
    "batch",
    "file",
    "accession_number",
    "status",
    "probability",
    "model_label",
    "model_version",
    "population",
    "population_reason",
    "review_finding",
    "review_agrees_with_model",
    "needs_second_read",
    "reviewer",
    "submitted_at",
    "scored_at",
    "reviewed_at",
]


# A cell a spreadsheet would read as a formula (OWASP "CSV injection"): a file
# named "=HYPERLINK(...)" or an AccessionNumber starting with "=" must arrive as
# text. Prefixing an apostrophe is what spreadsheets themselves do for that.
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def spreadsheet_safe(value):
    if isinstance(value, str) and value.startswith(_FORMULA_STARTS):
        return "'" + value
    return value


class _Echo:
    def write(self, value):
        return value


def _rows(studies: QuerySet[Study]):
    writer = csv.writer(_Echo())
    yield intended_use_line() + "\n"
    yield writer.writerow(COLUMNS)
    latest_reviews = Prefetch("reviews", queryset=Review.objects.select_related("reviewer").order_by("-created_at"))
    for study in (
        studies.select_related("duplicate_of")
        .prefetch_related("results", "duplicate_of__results", latest_reviews)
        .iterator(chunk_size=500)
    ):
        result = study.latest_result()
        reviews = list(study.reviews.all())
        review = reviews[0] if reviews else None
        yield writer.writerow(
            spreadsheet_safe(cell)
            for cell in [
                study.pk,
                study.batch_id,
                study.original_name,
                study.accession_number,
                study.status,
                f"{result.probability:.6f}" if result else "",
                result.label if result else "",
                result.model_version if result else "",
                study.population if result else "",
                study.population_reason if result else "",
                review.finding if review else "",
                "" if review is None or review.agrees_with_model is None else review.agrees_with_model,
                review.needs_second_read if review else "",
                review.reviewer.get_username() if review else "",
                study.created_at.isoformat(),
                result.created_at.isoformat() if result else "",
                review.created_at.isoformat() if review else "",
            ]
        )


def csv_response(studies: QuerySet[Study], filename: str) -> StreamingHttpResponse:
    response = StreamingHttpResponse(_rows(studies), content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    return response
