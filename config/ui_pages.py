"""Every page of the browser UI, found in the URLconf, with the objects of one organization its URL needs.

Used by the page benchmark (bench/pages.py) and the query-bound tests (tests/ui/test_query_bounds.py), so that a
page added to one of UI_URLCONFS is measured and bounded without anyone listing it. A route whose arguments name
an object the organization has none of (or that this module does not know how to find) comes back with a reason
instead of a URL: reported as skipped, never dropped. Whether a route is a page or an action shows only when it is
asked: a GET that answers 405 is an action (POST only) and is left out by the callers, saying so.
"""

import dataclasses

from django.urls import URLPattern, URLResolver, get_resolver, reverse

# The modules that hold the browser UI's routes (config/urls.py includes them); the API, the admin, webhooks and
# the sandbox are not pages.
UI_URLCONFS = ("syncs.urls", "integrations.urls_ui", "mappings.urls_ui", "accounts.urls", "notifications.urls_ui")


@dataclasses.dataclass
class UiPage:
    name: str  # the route's name, with its namespace ("mappings:edit")
    url: str = ""  # reversed with the organization's objects; "" when skipped
    skipped: str = ""  # why there is no URL


def ui_routes():
    """(route name, its URLPattern) of every named route of UI_URLCONFS, in URLconf order."""
    found = []

    def walk(patterns, namespace, inside):
        for pattern in patterns:
            if isinstance(pattern, URLResolver):
                module = getattr(pattern.urlconf_module, "__name__", pattern.urlconf_name)
                nested = ":".join(part for part in (namespace, pattern.namespace) if part)
                walk(pattern.url_patterns, nested, inside or module in UI_URLCONFS)
            elif isinstance(pattern, URLPattern) and inside and pattern.name:
                found.append((f"{namespace}:{pattern.name}" if namespace else pattern.name, pattern))

    walk(get_resolver().url_patterns, "", False)
    return found


def route_arguments(pattern):
    """The names of a route's URL arguments."""
    converters = getattr(pattern.pattern, "converters", None)
    if converters is not None:
        return list(converters)
    return list(pattern.pattern.regex.groupindex)


class OrgObjects:
    """The organization's objects a page URL may name, each looked up once, on first use (None: it has none).

    Detail pages get the object with the most to show, so that a page is measured at its fullest: the run with
    the most failures, the error with snapshots if any.
    """

    def __init__(self, org):
        self.org = org
        self.found = {}

    def get(self, kind):
        if kind not in self.found:
            self.found[kind] = getattr(self, f"_{kind}")()
        return self.found[kind]

    def _connection(self):
        from integrations.models import Connection

        return Connection.objects.for_org(self.org).order_by("created_at", "pk").first()

    def _mapping(self):
        from mappings.models import Mapping

        return Mapping.objects.for_org(self.org).order_by("created_at", "pk").first()

    def _run(self):
        from syncs.models import SyncRun

        return SyncRun.objects.for_org(self.org).order_by("-failed", "pk").first()

    def _error(self):
        from syncs.models import RecordError

        errors = RecordError.objects.for_org(self.org).order_by("pk")
        return errors.filter(snapshot_before__isnull=False).first() or errors.first()

    def _bulk_action(self):
        from syncs.models import BulkAction

        return BulkAction.objects.for_org(self.org).order_by("pk").first()

    def _token(self):
        from accounts.models import ApiToken

        return ApiToken.objects.for_org(self.org).order_by("pk").first()

    def _fingerprint(self):
        error = self.get("error")
        return error.fingerprint if error is not None and error.fingerprint else None

    def _fix_kind(self):
        # A suggested fix's kind (syncs.fixes): the page of any one of them is the same page.
        from syncs.fixes import KINDS

        return KINDS[0] if KINDS else None

    def _channel(self):
        from notifications.models import Channel

        return Channel.objects.for_org(self.org).order_by("created_at", "pk").first()

    def _rule(self):
        from notifications.models import Rule

        return Rule.objects.for_org(self.org).order_by("created_at", "pk").first()

    def _alert(self):
        from notifications.models import Alert

        return Alert.objects.for_org(self.org).order_by("-notifications", "pk").first()

    def _delivery(self):
        from notifications.models import Delivery

        return Delivery.objects.for_org(self.org).order_by("-attempts", "pk").first()

    def _record(self):
        from syncs.models import RecordLink

        return RecordLink.objects.for_org(self.org).order_by("pk").first()


# Which object a route's `code` (or `pk`) names, by its name: the first rule whose word is in the namespaced name.
# Order matters: "errors:bulk_action" is a bulk action, not an error.
CODE_RULES = (
    ("bulk", "bulk_action"),
    ("token", "token"),
    ("connection", "connection"),
    ("mapping", "mapping"),
    ("run", "run"),
    ("error", "error"),
    # Settings → Notifications ("notifications:channel_detail"...): no earlier word is in these names.
    ("channel", "channel"),
    ("rule", "rule"),
    ("alert", "alert"),
    ("delivery", "delivery"),
)


def object_for(route_name, argument):
    """The kind of object (an OrgObjects name) and its attribute that fill `argument` of `route_name`, or None."""
    if argument == "fingerprint":
        return "fingerprint", None
    if argument == "kind" and "fix" in route_name:
        return "fix_kind", None
    if argument in ("source_record_id", "record_id"):
        return "record", "source_record_id"
    if argument.endswith("_code"):  # mapping_code, run_code...: the prefix says which object
        kind = argument.removesuffix("_code")
        return (kind, "code") if hasattr(OrgObjects, f"_{kind}") else None
    if argument in ("code", "pk", "id"):
        for word, kind in CODE_RULES:
            if word in route_name:
                return kind, "code" if argument == "code" else "pk"
    return None


def ui_pages(org, objects=None):
    """Every UI route as a UiPage: its URL with `org`'s objects, or why it has none."""
    objects = objects or OrgObjects(org)
    pages = []
    for name, pattern in ui_routes():
        kwargs, missing = {}, ""
        for argument in route_arguments(pattern):
            source = object_for(name, argument)
            if source is None:
                missing = f"no rule in config/ui_pages.py says which object fills <{argument}>"
                break
            kind, attribute = source
            value = objects.get(kind)
            if value is None:
                missing = f"the organization has no {kind.replace('_', ' ')}"
                break
            kwargs[argument] = getattr(value, attribute) if attribute else value
        if missing:
            pages.append(UiPage(name, skipped=missing))
        else:
            pages.append(UiPage(name, url=reverse(name, kwargs=kwargs)))
    return pages
