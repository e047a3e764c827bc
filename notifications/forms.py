"""Forms of the notification settings pages (notifications.ui). They only shape what was typed; every check that
matters (addresses, the SSRF guard on URLs, secret sizes, a rule's scope and channels belonging to the
organization) is the services', whose ValidationErrors land next to the fields they name (`add_service_errors`).

Secrets are typed, never shown back: a Slack webhook URL and a webhook signing secret are password inputs that do
not render a value, not after a validation error and not in the edit form.
"""

import re

from django import forms

from integrations.models import Connection
from mappings.models import Mapping
from notifications.models import Channel, ChannelKind, Condition, Level, Rule, Scope
from notifications.services import DEFAULT_MINUTES, DEFAULT_THRESHOLDS, MAX_RECIPIENTS, ROTATION_GRACE

MAX_URL_LENGTH = 2000
MAX_SECRET_LENGTH = 200
ADDRESS_SEPARATORS = re.compile(r"[\s,;]+")
KIND_SUMMARIES = {
    ChannelKind.EMAIL: "Email to one or more addresses of your team.",
    ChannelKind.SLACK: "A message in a Slack channel, through an incoming webhook.",
    ChannelKind.WEBHOOK: "A signed JSON POST (Standard Webhooks) to a URL of yours.",
}


def addresses(text):
    """Email addresses typed one per line, or separated by commas, semicolons or spaces."""
    return [part for part in ADDRESS_SEPARATORS.split(text or "") if part]


def add_service_errors(form, error):
    """A service's ValidationError next to the fields it names; what names no field of the form goes on top."""
    found = error.message_dict if hasattr(error, "error_dict") else {"__all__": error.messages}
    for field, messages_ in found.items():
        form.add_error(field if field in form.fields else None, messages_)


def _secret_input(**attrs):
    return forms.PasswordInput(render_value=False, attrs={"autocomplete": "off", "spellcheck": "false", **attrs})


class ChannelForm(forms.Form):
    """A channel of one kind: its name and the one setting that kind has (recipients, a Slack URL, a webhook URL
    and optional signing secret). Editing leaves a URL empty to keep the current one: it is never shown."""

    name = forms.CharField(max_length=Channel._meta.get_field("name").max_length,
                           help_text="How your team will recognize it, e.g. “Ops on-call” or “#sync-alerts”.")

    def __init__(self, kind, *args, channel=None, **kwargs):
        self.kind, self.channel = kind, channel
        editing = channel is not None
        if editing:
            kwargs.setdefault("initial", {"name": channel.name, "recipients": "\n".join(channel.recipients)})
        super().__init__(*args, **kwargs)
        if kind == ChannelKind.EMAIL:
            self.fields["recipients"] = forms.CharField(
                label="Email addresses", widget=forms.Textarea(attrs={"rows": 3}), max_length=MAX_RECIPIENTS * 260,
                help_text=f"One per line, or separated by commas (at most {MAX_RECIPIENTS}).")
        elif kind == ChannelKind.SLACK:
            self.fields["url"] = forms.CharField(
                label="Incoming webhook URL", max_length=MAX_URL_LENGTH, required=not editing,
                widget=_secret_input(placeholder="https://hooks.slack.com/services/…"),
                help_text="In Slack: Apps → Incoming Webhooks → Add to Slack, then copy the webhook URL. It is a "
                          "secret: stored encrypted and never shown again."
                          + (" Leave empty to keep the current one." if editing else ""))
        else:
            self.fields["url"] = forms.CharField(
                label="URL", max_length=MAX_URL_LENGTH, required=not editing,
                widget=forms.URLInput(attrs={"placeholder": "https://example.com/resync-alerts"}),
                help_text="Resync POSTs signed JSON here. It must be a public https or http address."
                          + (" Leave empty to keep the current one." if editing else ""))
            if not editing:
                self.fields["secret"] = forms.CharField(
                    label="Signing secret (optional)", max_length=MAX_SECRET_LENGTH, required=False,
                    widget=_secret_input(placeholder="whsec_…"),
                    help_text="Leave empty and Resync generates one, shown once after saving. Your own: “whsec_” "
                              "followed by base64 of 24 to 64 random bytes.")

    def service_arguments(self):
        """The keyword arguments of channel_create / channel_update; a setting left empty while editing is kept."""
        data = self.cleaned_data
        found = {"name": data["name"]}
        if self.kind == ChannelKind.EMAIL:
            found["recipients"] = addresses(data["recipients"])
        elif data.get("url"):
            found["url"] = data["url"]
        if data.get("secret"):
            found["secret"] = data["secret"]
        return found


class SecretRotationForm(forms.Form):
    grace_hours = forms.IntegerField(
        label="Keep the previous secret signing for (hours)", min_value=0, max_value=24 * 7,
        initial=int(ROTATION_GRACE.total_seconds() // 3600),
        help_text="Messages carry a signature with both secrets for this long, so your receiver can switch over "
                  "without refusing one. 0 stops the previous secret at once.")


class CodeModelChoiceField(forms.ModelChoiceField):
    """A choice among the organization's own objects, posted by their public id: another organization's id is
    "not one of the available choices", exactly like an id that does not exist."""

    def label_from_instance(self, obj):
        return obj.name


class ChannelChoiceField(forms.ModelMultipleChoiceField):
    def label_from_instance(self, obj):
        return f"{obj.name} ({obj.get_kind_display()})" + ("" if obj.is_enabled else " — disabled")


def _threshold_help():
    per_hour = DEFAULT_THRESHOLDS[Condition.FAILURES_PER_HOUR]
    return (f"The N of “{Condition.FAILURES_PER_HOUR.label}” (default {per_hour})"
            f" and “{Condition.UNSYNCED_RECORDS.label}” (default {DEFAULT_THRESHOLDS[Condition.UNSYNCED_RECORDS]}). "
            "Leave empty for the default; other conditions have none.")


class RuleForm(forms.Form):
    """A rule: what to watch (condition and its N), where (scope), how loudly and through which channels, and
    who else hears of it (a customer's contacts, in wording written for them)."""

    SECTIONS = (
        ("What to watch", ("name", "condition", "threshold", "minutes", "digest_hour")),
        ("Where", ("scope", "connection", "mapping")),
        ("Who is told, and how loudly", ("level", "channels", "cooldown_minutes")),
        ("Your customer", ("customer_facing", "customer_name", "customer_contacts")),
    )

    name = forms.CharField(max_length=Rule._meta.get_field("name").max_length,
                           help_text="E.g. “CRM down for 10 minutes” or “Daily digest for the team”.")
    condition = forms.ChoiceField(choices=Condition.choices, initial=Condition.RUN_FAILED)
    threshold = forms.IntegerField(label="Threshold (N)", required=False, min_value=1, max_value=10_000_000,
                                   help_text=_threshold_help())
    minutes = forms.IntegerField(
        label="Minutes (N)", required=False, min_value=1, max_value=7 * 24 * 60,
        help_text=f"The N of “{Condition.TARGET_FAILING.label}” (default {DEFAULT_MINUTES[Condition.TARGET_FAILING]}).")
    digest_hour = forms.IntegerField(label="Digest hour (UTC)", min_value=0, max_value=23, initial=8,
                                     help_text="When the daily digest is sent, 0–23 UTC.")
    scope = forms.ChoiceField(choices=Scope.choices, initial=Scope.ORGANIZATION, widget=forms.RadioSelect)
    connection = CodeModelChoiceField(queryset=Connection.objects.none(), to_field_name="code", required=False,
                                      empty_label="—", help_text="For the scope “One connection”.")
    mapping = CodeModelChoiceField(queryset=Mapping.objects.none(), to_field_name="code", required=False,
                                   empty_label="—", help_text="For the scope “One mapping”.")
    level = forms.ChoiceField(choices=Level.choices, initial=Level.WARNING, widget=forms.RadioSelect,
                              help_text="Authentication rules are always critical.")
    channels = ChannelChoiceField(queryset=Channel.objects.none(), to_field_name="code", required=False,
                                  widget=forms.CheckboxSelectMultiple,
                                  help_text="Where the alert goes. At least one, unless the rule is customer-facing.")
    cooldown_minutes = forms.IntegerField(
        label="Cooldown (minutes)", min_value=0, max_value=7 * 24 * 60, initial=60,
        help_text="While an alert lasts, at most one reminder per this many minutes.")
    customer_facing = forms.BooleanField(
        label="Also tell the customer", required=False,
        help_text="Emails the contacts below in plain words (no internal details) when the alert fires and when "
                  "it is resolved.")
    customer_name = forms.CharField(max_length=Rule._meta.get_field("customer_name").max_length, required=False,
                                    help_text="Used in the greeting, e.g. “Ms. Rivera”.")
    customer_contacts = forms.CharField(label="Customer email addresses", required=False,
                                        widget=forms.Textarea(attrs={"rows": 2}), max_length=MAX_RECIPIENTS * 260,
                                        help_text="One per line, or separated by commas.")

    def __init__(self, organization, *args, rule=None, **kwargs):
        self.organization, self.rule = organization, rule
        if rule is not None:
            kwargs.setdefault("initial", {
                "name": rule.name, "condition": rule.condition, "threshold": rule.threshold, "minutes": rule.minutes,
                "digest_hour": rule.digest_hour, "scope": rule.scope, "connection": rule.connection,
                "mapping": rule.mapping, "level": rule.level, "channels": list(rule.channels.all()),
                "cooldown_minutes": rule.cooldown_minutes, "customer_facing": rule.customer_facing,
                "customer_name": rule.customer_name, "customer_contacts": "\n".join(rule.customer_contacts),
            })
        super().__init__(*args, **kwargs)
        self.fields["connection"].queryset = Connection.objects.for_org(organization).order_by("name", "id")
        self.fields["mapping"].queryset = Mapping.objects.for_org(organization).order_by("name", "id")
        self.fields["channels"].queryset = Channel.objects.for_org(organization).order_by("name", "id")

    def sections(self):
        return [(legend, [self[name] for name in names]) for legend, names in self.SECTIONS]

    def service_arguments(self):
        """The keyword arguments of rule_create / rule_update."""
        data = self.cleaned_data
        found = {name: data[name] for name in ("name", "condition", "threshold", "minutes", "digest_hour", "scope",
                                                "connection", "mapping", "level", "cooldown_minutes",
                                                "customer_facing", "customer_name")}
        found["channels"] = list(data["channels"])
        contacts = addresses(data["customer_contacts"])
        # A rule that is not customer-facing keeps no contacts: unticking the box drops them, it is not an error.
        found["customer_contacts"] = contacts if data["customer_facing"] else []
        return found
