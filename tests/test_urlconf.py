"""The URL configuration as a whole: one name, one route. Two routes of one name in one namespace make
`reverse` (and `{% url %}`) answer with whichever Django meets last; the API's analytics and the analytics page
once shared a name, and the tenant-isolation test called the page instead of the API."""

from collections import Counter

from django.urls import URLPattern, URLResolver, get_resolver


def named_routes(patterns, namespace=""):
    for pattern in patterns:
        if isinstance(pattern, URLResolver):
            inner = f"{namespace}{pattern.namespace}:" if pattern.namespace else namespace
            yield from named_routes(pattern.url_patterns, inner)
        elif isinstance(pattern, URLPattern) and pattern.name:
            yield f"{namespace}{pattern.name}", str(pattern.pattern)


def test_no_two_routes_share_a_name():
    routes = list(named_routes(get_resolver().url_patterns))
    # A router's format-suffix twin (".json") shares its route's name on purpose.
    names = Counter(name for name, route in routes if "(?P<format>" not in route and "<drf_format_suffix" not in route)

    assert len(routes) > 100
    assert [name for name, count in names.items() if count > 1] == []
