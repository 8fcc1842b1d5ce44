"""The intended-use line on every page, with the population from the served model's card."""

from __future__ import annotations

from screening.population import population_summary
from screening.serving import model_card

FALLBACK_POPULATION = "pediatric frontal chest X-rays (ages 1–5, one hospital)"


def intended_use(request) -> dict:
    card = model_card()
    return {
        "model_version": card.get("version", ""),
        "model_population": population_summary(card, FALLBACK_POPULATION),
    }
