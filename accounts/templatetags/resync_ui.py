"""Template helpers of the browser UI, shared by every page (`{% load resync_ui %}`).

`{% nav_link "url-name" "Label" %}`: a link of the main navigation, marked as the current page (aria-current) on
its own page and on every page below it (/runs/ is current on /runs/<id>/ too).
`{{ rate|percent }}`: a ratio of 0..1 (or None) as "97.4%" (or "—").
"""

import math

from django import template
from django.urls import reverse
from django.utils.html import format_html

register = template.Library()


@register.simple_tag(takes_context=True)
def nav_link(context, url_name, label):
    url = reverse(url_name)
    path = context["request"].path
    # The overview lives at "/", which every path starts with: it is current on itself only.
    current = path == url or (url != "/" and path.startswith(url))
    if current:
        return format_html('<a href="{}" aria-current="page">{}</a>', url, label)
    return format_html('<a href="{}">{}</a>', url, label)


@register.filter
def percent(ratio):
    if not isinstance(ratio, int | float):  # None, or a missing figure ("" in a template)
        return "—"
    # Rounded down, so 99.96% of records synced never reads as a perfect 100%.
    tenths = math.floor(ratio * 1000) / 10
    return f"{tenths:.0f}%" if tenths in (0, 100) else f"{tenths:.1f}%"
