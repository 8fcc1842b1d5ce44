"""Template filters that show stored English reasons in the reader's language (``screening.reasons``)."""

from django import template

from screening import reasons

register = template.Library()


@register.filter
def status_message(text: str) -> str:
    return reasons.status_message(text or "")


@register.filter
def population_reason(text: str) -> str:
    return reasons.population_reason(text or "")
