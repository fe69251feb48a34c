"""`{% flag "key" %}…{% else %}…{% endflag %}`: render a block when a boolean flag is on.

The context comes from `request` in the template context (the request context processor).
"""

from __future__ import annotations

from typing import Any

from django import template
from django.template.base import FilterExpression

from flagclient.django import flag_enabled, flag_value

register = template.Library()


class FlagNode(template.Node):
    def __init__(
        self, flag_key: FilterExpression, on: template.NodeList, off: template.NodeList
    ) -> None:
        self.flag_key, self.on, self.off = flag_key, on, off

    def render(self, context: template.Context) -> str:
        request = context.get("request")
        key = self.flag_key.resolve(context)
        enabled = request is not None and flag_enabled(request, key)
        return (self.on if enabled else self.off).render(context)


@register.tag
def flag(parser: template.base.Parser, token: template.base.Token) -> FlagNode:
    bits = token.split_contents()
    if len(bits) != 2:
        raise template.TemplateSyntaxError(f"{bits[0]} takes one argument: the flag key")
    key = parser.compile_filter(bits[1])
    on = parser.parse(("else", "endflag"))
    off = template.NodeList()
    if parser.next_token().contents == "else":
        off = parser.parse(("endflag",))
        parser.delete_first_token()
    return FlagNode(key, on, off)


@register.simple_tag(takes_context=True)
def flag_value_of(context: template.Context, flag_key: str, default: Any = None) -> Any:
    """`{% flag_value_of "banner-text" "Welcome" as text %}`: any flag's value."""
    request = context.get("request")
    return default if request is None else flag_value(request, flag_key, default)
