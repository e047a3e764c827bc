"""Browser pages of Settings → Notifications: channels (add, edit, delete, send a test, rotate a webhook's secret,
enable again), rules (add, edit, enable or disable, delete), the alerts they opened and every delivery with its
attempts.

Every view acts for request.org (accounts.access) and calls the services the REST API calls
(notifications.services); acting needs the role the API's notification resources ask for writes (a viewer looks
but gets 403). A channel's secrets are never shown: a Slack URL or a webhook URL appears as its host only, and a
generated signing secret is shown once, on the answer that created or rotated it (rendered, never stored in a
session or a message, and not cached).
"""

import uuid
from datetime import timedelta
from urllib.parse import urlencode, urlsplit

from django import forms
from django.conf import settings
from django.contrib import messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.core.paginator import Paginator
from django.db.models import Count, Prefetch, Q
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils.cache import add_never_cache_headers
from django.views.decorators.http import require_http_methods, require_POST

from accounts.access import VIEWER_REFUSAL, get_object_for_org_or_404, org_required
from accounts.authentication import ROLE_RANK
from accounts.models import Role
from integrations.crypto import CredentialsDecryptionError
from notifications.api import ChannelViewSet, RuleViewSet
from notifications.forms import (
    KIND_SUMMARIES,
    ChannelForm,
    CodeModelChoiceField,
    RuleForm,
    SecretRotationForm,
    add_service_errors,
)
from notifications.models import (
    Alert,
    AlertState,
    Channel,
    ChannelKind,
    Delivery,
    DeliveryAttempt,
    DeliveryStatus,
    Rule,
)
from notifications.services import (
    channel_create,
    channel_delete,
    channel_enable,
    channel_rotate_secret,
    channel_send_test,
    channel_update,
    rule_create,
    rule_delete,
    rule_update,
)

POLL_SECONDS = 2
PAGE_SIZE = 50
FIRING_SHOWN = 200
RECENT_DELIVERIES = 20
# A delivery still to be tried by a worker: its page follows it until it is delivered, failed or waiting to retry.
LIVE_DELIVERY = (DeliveryStatus.PENDING, DeliveryStatus.SENDING)


def _require_write(request, viewset=ChannelViewSet):
    """The role the API's notification resources ask for writes; pages that only exist to act (forms,
    confirmations) are refused like the actions themselves."""
    needed = getattr(viewset, "write_role", Role.MEMBER)
    if not request.membership.can_write or ROLE_RANK[request.membership.role] < ROLE_RANK[needed]:
        raise PermissionDenied(VIEWER_REFUSAL if not request.membership.can_write else
                               f"Notifications are changed by {Role(needed).label.lower()}s and above.")


def destination(channel):
    """Where a channel's messages go, safe to show: the addresses, or a URL's scheme and host only (a Slack URL
    is itself the credential, and a webhook URL's path or query may carry a token)."""
    if channel.kind == ChannelKind.EMAIL:
        return ", ".join(channel.recipients)
    if channel.kind == ChannelKind.SLACK:
        try:
            url = channel.secrets.get("url", "")
        except CredentialsDecryptionError:
            return "Slack webhook (unreadable: the encryption keys changed)"
    else:
        url = channel.url
    parts = urlsplit(url)
    if not parts.hostname:
        return "—"
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{parts.hostname}{port}/…" if parts.path.strip("/") or parts.query else \
        f"{parts.scheme}://{parts.hostname}{port}"


def _context(request, tab, **context):
    """What every notifications page shows around its content: the tabs, with the number of firing alerts."""
    firing = Alert.objects.for_org(request.org).filter(state=AlertState.FIRING).count()
    return {"tab": tab, "firing_count": firing, "can_write": request.membership.can_write, **context}


def _channel(request, code):
    return get_object_for_org_or_404(Channel, request.org, code=code)


def _rule(request, code):
    return get_object_for_org_or_404(Rule, request.org, code=code)


def _with_attempts(deliveries):
    return deliveries.select_related("channel", "alert", "rule").prefetch_related(
        Prefetch("attempt_log", queryset=DeliveryAttempt.objects.order_by("number")))


def _page_links(request, page):
    """?page= links that keep the other query parameters."""
    def link(number):
        query = request.GET.copy()
        query["page"] = number
        return f"?{query.urlencode()}"

    return {"previous": link(page.previous_page_number()) if page.has_previous() else "",
            "next": link(page.next_page_number()) if page.has_next() else ""}


# --- channels ------------------------------------------------------------------------------------------------------


@org_required
def channel_list(request):
    """The organization's channels with where they send (no secret), their state and the rules that use them."""
    channels = list(Channel.objects.for_org(request.org).annotate(rule_count=Count("rules")).order_by("name", "id"))
    rows = [{"channel": channel, "destination": destination(channel)} for channel in channels]
    return render(request, "notifications/channel_list.html", _context(request, "channels", rows=rows))


def _kinds(chosen):
    return [{"key": kind.value, "label": kind.label, "summary": KIND_SUMMARIES[kind], "chosen": kind == chosen}
            for kind in ChannelKind]


@require_http_methods(["GET", "POST"])
@org_required
def channel_add(request):
    """Pick a kind (?kind=), then fill in its form. A generated signing secret is shown on this answer only."""
    _require_write(request)
    source = request.POST if request.method == "POST" else request.GET
    kind = source.get("kind") if source.get("kind") in ChannelKind.values else None
    form = ChannelForm(kind, request.POST if request.method == "POST" else None) if kind else None
    if form is not None and request.method == "POST" and form.is_valid():
        arguments = form.service_arguments()
        try:
            channel, plain = channel_create(organization=request.org, kind=kind, **arguments)
        except ValidationError as exc:
            add_service_errors(form, exc)
        else:
            if plain is not None and "secret" not in arguments:
                # Rendered, not redirected: the secret is stored nowhere else (a session or message would keep it).
                response = render(request, "notifications/channel_secret.html",
                                  _context(request, "channels", channel=channel, secret=plain, created=True))
                add_never_cache_headers(response)
                return response
            messages.success(request, f"{channel.name} is added. Send a test message to see that it arrives, then "
                                      "add a rule that sends to it.")
            return redirect("notifications:channel_detail", code=channel.code)
    elif request.method == "POST":
        messages.error(request, "Choose the kind of channel first.")
    return render(request, "notifications/channel_add.html",
                  _context(request, "channels", kinds=_kinds(kind), kind=kind, form=form,
                           kind_label=ChannelKind(kind).label if kind else ""),
                  status=400 if form is not None and form.errors else 200)


@org_required
def channel_detail(request, code):
    channel = _channel(request, code)
    rules = list(channel.rules.order_by("name", "id"))
    deliveries = list(_with_attempts(channel.deliveries.order_by("-created_at", "-id"))[:RECENT_DELIVERIES])
    return render(request, "notifications/channel_detail.html", _context(
        request, "channels", channel=channel, destination=destination(channel), rules=rules, deliveries=deliveries,
        deliveries_url=f"{reverse('notifications:deliveries')}?{urlencode({'channel': channel.code})}"))


@require_http_methods(["GET", "POST"])
@org_required
def channel_edit(request, code):
    """Its name and recipients or URL; a URL left empty is kept (it is never shown to be edited)."""
    _require_write(request)
    channel = _channel(request, code)
    form = ChannelForm(channel.kind, request.POST if request.method == "POST" else None, channel=channel)
    if request.method == "POST" and form.is_valid():
        try:
            channel_update(channel=channel, **form.service_arguments())
        except ValidationError as exc:
            add_service_errors(form, exc)
            channel = _channel(request, code)  # the page's title keeps the stored name
        else:
            messages.success(request, f"{channel.name} is saved.")
            return redirect("notifications:channel_detail", code=channel.code)
    return render(request, "notifications/channel_edit.html",
                  _context(request, "channels", channel=channel, form=form, destination=destination(channel)),
                  status=400 if form.errors else 200)


@require_http_methods(["GET", "POST"])
@org_required
def channel_delete_view(request, code):
    """A confirmation naming the rules that would be left sending nowhere; POST deletes."""
    _require_write(request)
    channel = _channel(request, code)
    if request.method == "POST":
        channel_delete(channel=channel)
        messages.success(request, f"{channel.name} is deleted, with its delivery history.")
        return redirect("notifications:channels")
    rules = list(channel.rules.annotate(channel_count=Count("channels")).order_by("name", "id"))
    return render(request, "notifications/channel_delete.html", _context(
        request, "channels", channel=channel, rules=rules,
        orphaned=[rule for rule in rules if rule.channel_count == 1 and not rule.customer_facing]))


@require_POST
@org_required
def channel_test(request, code):
    """"Send test": a test message is queued; its delivery's page follows it until it arrives or fails."""
    _require_write(request)
    channel = _channel(request, code)
    try:
        delivery = channel_send_test(channel=channel)
    except ValidationError as exc:
        messages.error(request, " ".join(exc.messages))
        return redirect("notifications:channel_detail", code=channel.code)
    messages.success(request, f"A test message to {channel.name} is queued.")
    return redirect("notifications:delivery_detail", code=delivery.code)


@require_http_methods(["GET", "POST"])
@org_required
def channel_rotate(request, code):
    """A webhook channel's new signing secret, shown on this answer only; the previous one keeps signing for the
    grace period."""
    _require_write(request)
    channel = _channel(request, code)
    if channel.kind != ChannelKind.WEBHOOK:
        messages.error(request, "Only webhook channels have a signing secret.")
        return redirect("notifications:channel_detail", code=channel.code)
    form = SecretRotationForm(request.POST if request.method == "POST" else None)
    if request.method == "POST" and form.is_valid():
        grace = timedelta(hours=form.cleaned_data["grace_hours"])
        try:
            plain = channel_rotate_secret(channel=channel, grace=grace)
        except CredentialsDecryptionError:
            form.add_error("grace_hours", "The current secrets cannot be read (the encryption keys changed): rotate "
                                          "with 0 hours, the previous secret cannot sign any more.")
        except ValidationError as exc:
            add_service_errors(form, exc)
        else:
            response = render(request, "notifications/channel_secret.html", _context(
                request, "channels", channel=channel, secret=plain, created=False,
                grace_hours=form.cleaned_data["grace_hours"]))
            add_never_cache_headers(response)
            return response
    return render(request, "notifications/channel_rotate.html", _context(request, "channels", channel=channel,
                                                                         form=form),
                  status=400 if form.errors else 200)


@require_POST
@org_required
def channel_enable_view(request, code):
    _require_write(request)
    channel = _channel(request, code)
    if channel.is_enabled:
        messages.info(request, f"{channel.name} is already enabled.")
    else:
        channel_enable(channel=channel)
        messages.success(request, f"{channel.name} is enabled again. Send a test message to check the endpoint.")
    return redirect("notifications:channel_detail", code=channel.code)


# --- rules ---------------------------------------------------------------------------------------------------------


@org_required
def rule_list(request):
    rules = list(Rule.objects.for_org(request.org).select_related("connection", "mapping")
                 .prefetch_related(Prefetch("channels", queryset=Channel.objects.order_by("name", "id")))
                 .annotate(firing=Count("alerts", filter=Q(alerts__state=AlertState.FIRING)))
                 .order_by("name", "id"))
    has_channels = bool(rules) or Channel.objects.for_org(request.org).exists()
    return render(request, "notifications/rule_list.html",
                  _context(request, "rules", rules=rules, has_channels=has_channels))


def _rule_form_page(request, rule=None):
    _require_write(request, RuleViewSet)
    form = RuleForm(request.org, request.POST if request.method == "POST" else None, rule=rule)
    if request.method == "POST" and form.is_valid():
        try:
            if rule is None:
                rule = rule_create(organization=request.org, **form.service_arguments())
                text = f"{rule.name} is added."
            else:
                rule = rule_update(rule=rule, **form.service_arguments())
                text = f"{rule.name} is saved."
        except ValidationError as exc:
            add_service_errors(form, exc)
            if rule is not None:
                rule = _rule(request, rule.code)  # the page's title keeps the stored name
        else:
            messages.success(request, text)
            return redirect("notifications:rules")
    has_channels = Channel.objects.for_org(request.org).exists()
    return render(request, "notifications/rule_form.html",
                  _context(request, "rules", rule=rule, form=form, has_channels=has_channels),
                  status=400 if form.errors else 200)


@require_http_methods(["GET", "POST"])
@org_required
def rule_add(request):
    return _rule_form_page(request)


@require_http_methods(["GET", "POST"])
@org_required
def rule_edit(request, code):
    return _rule_form_page(request, _rule(request, code))


def _rule_switch(request, code, *, enable):
    _require_write(request, RuleViewSet)
    rule = _rule(request, code)
    if rule.is_enabled == enable:
        messages.info(request, f"{rule.name} is already {'enabled' if enable else 'disabled'}.")
        return redirect("notifications:rules")
    firing = 0 if enable else rule.alerts.filter(state=AlertState.FIRING).count()
    try:
        rule_update(rule=rule, is_enabled=enable)
    except ValidationError as exc:
        messages.error(request, f"{rule.name} cannot be enabled: {' '.join(exc.messages)} Edit it first.")
        return redirect("notifications:rules")
    if enable:
        messages.success(request, f"{rule.name} is enabled: it is evaluated again from now on.")
    else:
        closed = (f" Its {firing} firing alert{'s were' if firing != 1 else ' was'} closed without a recovery "
                  "notice." if firing else "")
        messages.success(request, f"{rule.name} is disabled: it opens no alert and sends nothing.{closed}")
    return redirect("notifications:rules")


@require_POST
@org_required
def rule_enable(request, code):
    return _rule_switch(request, code, enable=True)


@require_POST
@org_required
def rule_disable(request, code):
    return _rule_switch(request, code, enable=False)


@require_http_methods(["GET", "POST"])
@org_required
def rule_delete_view(request, code):
    _require_write(request, RuleViewSet)
    rule = _rule(request, code)
    if request.method == "POST":
        rule_delete(rule=rule)
        messages.success(request, f"{rule.name} is deleted, with its alerts and their deliveries.")
        return redirect("notifications:rules")
    counts = rule.alerts.aggregate(total=Count("pk"), firing=Count("pk", filter=Q(state=AlertState.FIRING)))
    return render(request, "notifications/rule_delete.html", _context(request, "rules", rule=rule, counts=counts))


# --- alerts and deliveries -----------------------------------------------------------------------------------------


@org_required
def alert_list(request):
    """Firing alerts first (newest first), then the resolved ones, most recently resolved first, in pages."""
    alerts = Alert.objects.for_org(request.org).select_related("rule")
    rule = None
    if request.GET.get("rule"):
        try:
            rule = Rule.objects.for_org(request.org).filter(code=uuid.UUID(request.GET["rule"])).first()
        except ValueError:  # not an id at all: no such rule, like another organization's
            rule = None
        if rule is None:
            messages.error(request, "No rule with this id: showing every alert.")
        else:
            alerts = alerts.filter(rule=rule)
    firing = list(alerts.filter(state=AlertState.FIRING).order_by("-started_at", "-id")[:FIRING_SHOWN])
    resolved = Paginator(alerts.filter(state=AlertState.RESOLVED).order_by("-resolved_at", "-id"), PAGE_SIZE)
    page = resolved.get_page(request.GET.get("page"))
    return render(request, "notifications/alert_list.html", _context(
        request, "alerts", firing=firing, firing_more=len(firing) == FIRING_SHOWN, page=page, rule=rule,
        links=_page_links(request, page), has_rules=rule is not None or Rule.objects.for_org(request.org).exists()))


@org_required
def alert_detail(request, code):
    alert = get_object_for_org_or_404(Alert.objects.select_related("rule", "connection", "mapping", "run"),
                                      request.org, code=code)
    deliveries = list(_with_attempts(alert.deliveries.order_by("-created_at", "-id"))[:PAGE_SIZE])
    counts = [(name.replace("_", " ").capitalize(), value)
              for name, value in (alert.details.get("counts") or {}).items()]
    # Messages carry absolute links (RESYNC_PUBLIC_URL); on this page the link stays on the host being browsed.
    link, base = alert.details.get("link", ""), settings.RESYNC_PUBLIC_URL.rstrip("/")
    if base and link.startswith(f"{base}/"):
        link = link.removeprefix(base)
    return render(request, "notifications/alert_detail.html", _context(
        request, "alerts", alert=alert, deliveries=deliveries, counts=counts, link=link,
        deliveries_url=f"{reverse('notifications:deliveries')}?{urlencode({'alert': alert.code})}"))


class DeliveryFilterForm(forms.Form):
    channel = CodeModelChoiceField(queryset=Channel.objects.none(), to_field_name="code", required=False,
                                   empty_label="Every channel")
    status = forms.ChoiceField(choices=[("", "Every status"), *DeliveryStatus.choices], required=False)
    alert = forms.UUIDField(required=False, widget=forms.HiddenInput)

    def __init__(self, organization, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["channel"].queryset = Channel.objects.for_org(organization).order_by("name", "id")


@org_required
def delivery_list(request):
    """Every message sent or being retried, newest first, with each attempt; by channel, alert or status."""
    form = DeliveryFilterForm(request.org, request.GET or None)
    deliveries = Delivery.objects.for_org(request.org)
    alert = None
    if form.is_valid():
        data = form.cleaned_data
        if data["channel"]:
            deliveries = deliveries.filter(channel=data["channel"])
        if data["status"]:
            deliveries = deliveries.filter(status=data["status"])
        if data["alert"]:
            alert = get_object_for_org_or_404(Alert, request.org, code=data["alert"])
            deliveries = deliveries.filter(alert=alert)
    elif form.is_bound:
        deliveries = deliveries.none()
    page = Paginator(_with_attempts(deliveries.order_by("-created_at", "-id")), PAGE_SIZE).get_page(
        request.GET.get("page"))
    return render(request, "notifications/delivery_list.html", _context(
        request, "deliveries", form=form, page=page, alert=alert, links=_page_links(request, page),
        filtered=form.is_bound))


@org_required
def delivery_detail(request, code):
    """A delivery, its message and its attempts; htmx asks again every POLL_SECONDS while a worker has yet to try
    it (a test message's outcome shows up by itself)."""
    delivery = get_object_for_org_or_404(_with_attempts(Delivery.objects.all()), request.org, code=code)
    live = delivery.status in LIVE_DELIVERY
    context = _context(request, "deliveries", delivery=delivery, live=live, poll_seconds=POLL_SECONDS)
    template = "notifications/partials/delivery_status.html" if request.htmx else "notifications/delivery_detail.html"
    return render(request, template, context)
