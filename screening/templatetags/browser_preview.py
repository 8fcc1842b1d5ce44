"""``{% browser_preview_config as config %}``: the submit page's in-browser preview settings (issue 16)."""

from __future__ import annotations

from django import template

from screening.web.browser_preview import page_config

register = template.Library()


@register.simple_tag
def browser_preview_config() -> dict:
    return page_config()
