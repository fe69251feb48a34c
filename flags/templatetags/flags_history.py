"""Template filters for what changed, in words (flags.history)."""

from __future__ import annotations

from django import template

from flags import history

register = template.Library()


@register.filter
def change_text(data: object) -> str:
    """`{{ change.data|change_text }}`: a scheduled change in words."""
    return history.change_text(data)
