"""The intended-use line on every page, with the population from the served model's card."""

from __future__ import annotations

import functools
import json
import logging

from screening.serving import model_dir

log = logging.getLogger(__name__)

FALLBACK_POPULATION = "pediatric frontal chest X-rays (ages 1–5, one hospital)"


@functools.lru_cache(maxsize=4)
def _card(path: str, mtime: float) -> dict:
    return json.loads(open(path, encoding="utf-8").read())


def model_card() -> dict:
    try:
        path = model_dir() / "card.json"
        return _card(str(path), path.stat().st_mtime)
    except (OSError, ValueError) as exc:
        log.warning("no readable model card: %s", exc)
        return {}


def intended_use(request) -> dict:
    card = model_card()
    return {
        "model_version": card.get("version", ""),
        "model_population": card.get("population") or FALLBACK_POPULATION,
    }
