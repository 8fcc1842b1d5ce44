"""The intended-use line on every page, with the population from the served model's card."""

from __future__ import annotations

from django.utils.functional import SimpleLazyObject
from django.utils.translation import gettext, gettext_noop

from screening.population import population_summary
from screening.selectors import current_site_setting
from screening.served_model import model_card

FALLBACK_POPULATION = gettext_noop("pediatric frontal chest X-rays (ages 1–5, one hospital)")
# The shipped cards' population summary, so the banner can show it in the reader's language; another
# card's summary is shown as written.
gettext_noop("pediatric frontal chest X-rays (ages 1–5, one hospital in Guangzhou)")


def intended_use(request) -> dict:
    card = model_card()
    version = card.get("version", "")
    return {
        "model_version": version,
        "model_population": gettext(population_summary(card, FALLBACK_POPULATION)),
        # Read lazily, once per request: only pages that render the banner pay for the query.
        "site_setting": SimpleLazyObject(lambda: current_site_setting(version) if version else None),
    }
