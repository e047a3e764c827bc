"""Browser pages of connections: the list, adding one with its provider's own form, its detail (test, reconnect,
refresh schema), editing and deleting it.

Every view acts for request.org (accounts.access) and calls the services the REST API calls
(integrations.services, syncs.chains.connection_reconnect_and_resume). The forms are built from the provider's
declared form (`provider_forms()`); secret fields are password inputs that never render a value back.
"""

import json

from django import forms
from django.contrib import messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.db.models import Prefetch, Q
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_http_methods, require_POST

from accounts.access import VIEWER_REFUSAL, get_object_for_org_or_404, org_required
from integrations.connectors.base import ObjectSchema
from integrations.errors import ConnectorError
from integrations.models import Connection
from integrations.services import (
    ConnectionInUse,
    connection_check,
    connection_clean,
    connection_create,
    connection_delete,
    connection_hint,
    connection_schema_refresh,
    connection_update,
    provider_forms,
)
from mappings.models import Mapping
from syncs.chains import connection_reconnect_and_resume

# What each system is, in a few words, for the provider picker (the registry knows only a label).
PROVIDER_SUMMARIES = {
    "sandbox": "The demo's simulated CRM: contacts and companies.",
    "hubspot": "HubSpot CRM: contacts, companies, deals.",
    "salesforce": "Salesforce: Contact, Account, Opportunity.",
    "pipedrive": "Pipedrive: persons, organizations, deals.",
    "jobber": "Jobber field service: clients, jobs.",
    "shopify": "Shopify store: customers and orders.",
    "postgres_table": "A table or view of your PostgreSQL database.",
    "connector_service": "Your own service over HTTP.",
}
MAX_SETTING_LENGTH = 2000
CONFIG_PREFIX, SECRET_PREFIX = "config__", "credentials__"


def _providers():
    return {form["key"]: {**form, "summary": PROVIDER_SUMMARIES.get(form["key"], "")} for form in provider_forms()}


def _require_write(request):
    """Pages that only exist to act (forms) are refused to viewers, like the actions themselves."""
    if not request.membership.can_write:
        raise PermissionDenied(VIEWER_REFUSAL)


# --- forms -------------------------------------------------------------------------------------------------------


def _setting_field(setting, *, secret, editing):
    """A form field for one of the provider's declared settings."""
    required = setting["required"] and not (secret and editing)
    options = {"label": setting["label"], "required": required, "help_text": setting["help"]}
    attrs = {"placeholder": setting["placeholder"]} if setting["placeholder"] else {}
    if secret:
        # Never rendered back: not after a validation error, not in the edit form.
        attrs["autocomplete"] = "new-password"
        return forms.CharField(max_length=MAX_SETTING_LENGTH, strip=True,
                               widget=forms.PasswordInput(attrs=attrs, render_value=False), **options)
    kind = setting["type"]
    if kind == "integer":
        return forms.IntegerField(widget=forms.NumberInput(attrs=attrs), **options)
    if kind == "boolean":
        return forms.BooleanField(**{**options, "required": False})
    if kind == "choice":
        choices = [(choice, choice) for choice in setting["choices"]]
        if not setting["required"]:
            choices = [("", "—"), *choices]
        return forms.ChoiceField(choices=choices, **options)
    if kind == "text":
        return forms.CharField(max_length=MAX_SETTING_LENGTH, widget=forms.Textarea(attrs={**attrs, "rows": 3}),
                               **options)
    # A URL is checked by the service (the SSRF guard), which also says why an address is refused.
    widget = forms.URLInput(attrs=attrs) if kind == "url" else forms.TextInput(attrs=attrs)
    return forms.CharField(max_length=MAX_SETTING_LENGTH, widget=widget, **options)


class ConnectionForm(forms.Form):
    """A connection's name, concurrency and its provider's settings: `config__<key>` and `credentials__<key>`."""

    name = forms.CharField(max_length=200, help_text="How your team will recognize it, e.g. “Production CRM”.")
    max_concurrency = forms.IntegerField(
        label="Max concurrency", min_value=1, max_value=32, initial=4,
        help_text="Batches processed against this system at the same time, across all runs (1–32).",
    )

    def __init__(self, provider, *args, connection=None, **kwargs):
        self.provider, self.connection = provider, connection
        editing = connection is not None
        if editing:
            kwargs.setdefault("initial", {
                "name": connection.name, "max_concurrency": connection.max_concurrency,
                **{CONFIG_PREFIX + key: value for key, value in connection.config.items()},
            })
        else:
            kwargs.setdefault("initial", {
                CONFIG_PREFIX + setting["name"]: setting["default"]
                for setting in provider["config_fields"] if setting["default"] is not None
            })
        super().__init__(*args, **kwargs)
        for setting in provider["config_fields"]:
            self.fields[CONFIG_PREFIX + setting["name"]] = _setting_field(setting, secret=False, editing=editing)
        for setting in provider["secret_fields"]:
            field = _setting_field(setting, secret=True, editing=editing)
            if editing:
                field.help_text = " ".join(filter(None, [field.help_text, "Leave empty to keep the current one."]))
            self.fields[SECRET_PREFIX + setting["name"]] = field

    def config_fields(self):
        return [self[name] for name in self.fields if name.startswith(CONFIG_PREFIX)]

    def secret_fields(self):
        return [self[name] for name in self.fields if name.startswith(SECRET_PREFIX)]

    def config(self):
        """The config the form describes; on an existing connection, its keys the form does not show are kept
        (a sandbox's fault injection, for instance)."""
        declared = {setting["name"] for setting in self.provider["config_fields"]}
        config = {key: value for key, value in (self.connection.config if self.connection else {}).items()
                  if key not in declared}
        for setting in self.provider["config_fields"]:
            value = self.cleaned_data.get(CONFIG_PREFIX + setting["name"])
            if value not in (None, ""):
                config[setting["name"]] = value
            elif setting["type"] == "boolean":
                config[setting["name"]] = False
        return config

    def credentials(self):
        """The credentials typed in, or None when none were (an edit then keeps the stored ones)."""
        credentials = {setting["name"]: self.cleaned_data[SECRET_PREFIX + setting["name"]]
                       for setting in self.provider["secret_fields"]
                       if self.cleaned_data.get(SECRET_PREFIX + setting["name"])}
        return credentials or None

    def add_service_errors(self, error):
        """A service's ValidationError ({"config.base_url": [...], "name": [...]}) next to the fields it names."""
        for path, messages_ in _error_dict(error).items():
            field = path.replace("config.", CONFIG_PREFIX, 1).replace("credentials.", SECRET_PREFIX, 1)
            if field in self.fields:
                self.add_error(field, messages_)
            else:
                self.add_error(None, [f"{path}: {message}" for message in messages_])


class CredentialsForm(forms.Form):
    """New credentials for a reconnect: the provider's secret fields, all empty to keep the current ones."""

    def __init__(self, provider, *args, **kwargs):
        self.provider = provider
        super().__init__(*args, **kwargs)
        for setting in provider["secret_fields"]:
            field = _setting_field(setting, secret=True, editing=True)
            self.fields[SECRET_PREFIX + setting["name"]] = field

    credentials = ConnectionForm.credentials
    add_service_errors = ConnectionForm.add_service_errors


def _error_dict(error):
    if hasattr(error, "error_dict"):
        return error.message_dict
    return {"__all__": error.messages}


# --- pages -------------------------------------------------------------------------------------------------------


def _connection(request, code):
    return get_object_for_org_or_404(Connection, request.org, code=code)


def _provider_of(connection):
    """The provider's form; a provider retired from the registry has no settings left to show."""
    return _providers().get(connection.provider) or {
        "key": connection.provider, "label": connection.provider, "summary": "", "config_fields": [],
        "secret_fields": [],
    }


def _mappings_using(connection):
    return list(Mapping.objects.for_org(connection.organization)
                .filter(Q(source_connection=connection) | Q(target_connection=connection)).order_by("name", "id"))


def _cached_schema(connection):
    """The objects and fields the system last described, from the cache only: showing a page calls no system."""
    cache = connection.schema_cache or {}
    schemas = cache.get("schemas", {})
    objects = []
    for summary in cache.get("objects", []):
        data = schemas.get(summary["name"])
        schema = ObjectSchema.from_dict(data) if data else None
        objects.append({"name": summary["name"], "label": summary.get("label") or summary["name"],
                        "fields": list(schema.fields.values()) if schema else []})
    return objects


@org_required
def connection_list(request):
    """Every connection of the organization with its status, last check and the mappings that use it."""
    using = Mapping.objects.order_by("name", "id").only("code", "name", "source_connection", "target_connection")
    connections = list(Connection.objects.for_org(request.org).order_by("name", "id").prefetch_related(
        Prefetch("source_mappings", queryset=using), Prefetch("target_mappings", queryset=using),
    ))
    providers = _providers()
    rows = []
    for connection in connections:
        mappings = {m.pk: m for m in [*connection.source_mappings.all(), *connection.target_mappings.all()]}
        rows.append({"connection": connection, "mappings": sorted(mappings.values(), key=lambda m: m.name),
                     "provider_label": providers.get(connection.provider, {}).get("label", connection.provider)})
    return render(request, "integrations/connection_list.html", {"rows": rows})


@require_http_methods(["GET", "POST"])
@org_required
def connection_add(request):
    """Pick a provider (?provider=, or an htmx swap), then fill in its form; POST creates the connection."""
    _require_write(request)
    providers = _providers()
    chosen = providers.get(request.POST.get("provider") if request.method == "POST" else request.GET.get("provider"))
    form = None
    if chosen is not None:
        form = ConnectionForm(chosen, request.POST if request.method == "POST" else None)
        if request.htmx:
            form.fields["name"].widget.attrs["autofocus"] = True  # the swapped form takes the focus
        if request.method == "POST" and form.is_valid():
            try:
                connection = connection_create(
                    organization=request.org, name=form.cleaned_data["name"], provider=chosen["key"],
                    config=form.config(), credentials=form.credentials(),
                    max_concurrency=form.cleaned_data["max_concurrency"],
                )
            except ValidationError as exc:
                form.add_service_errors(exc)
            else:
                messages.success(request, f"{connection.name} is added. Test it to see that {chosen['label']} "
                                          "answers, then refresh its schema.")
                return redirect("connections:detail", code=connection.code)
    elif request.method == "POST":
        messages.error(request, "Choose the system to connect first.")
    context = {"providers": providers.values(), "chosen": chosen, "form": form}
    template = "integrations/partials/connection_add_body.html" if request.htmx else "integrations/connection_add.html"
    return render(request, template, context)


def _settings(connection, provider):
    """The connection's config as the provider's form labels it; keys the form does not declare (a sandbox's
    fault injection) follow as JSON. Config holds nothing secret (connection_clean refuses secret-looking keys)."""
    config = connection.config or {}
    declared = {setting["name"] for setting in provider["config_fields"]}
    rows = [{"label": setting["label"], "is_set": config.get(setting["name"]) not in (None, ""),
             "value": config.get(setting["name"]), "default": setting["default"]}
            for setting in provider["config_fields"]]
    rows += [{"label": key, "is_set": True, "value": json.dumps(value), "default": None}
             for key, value in sorted(config.items()) if key not in declared]
    return rows


def _detail_context(request, connection):
    provider = _provider_of(connection)
    return {"connection": connection, "provider": provider, "settings": _settings(connection, provider),
            "mappings": _mappings_using(connection), "objects": _cached_schema(connection),
            "can_write": request.membership.can_write}


@org_required
def connection_detail(request, code):
    connection = _connection(request, code)
    return render(request, "integrations/connection_detail.html", _detail_context(request, connection))


@require_POST
@org_required
def connection_test(request, code):
    """"Test connection": connection_check, with its specific message and what to do about it."""
    connection = _connection(request, code)
    error = connection_check(connection=connection)
    check = {"ok": error is None, "message": error.message if error else "",
             "hint": connection_hint(error) if error else "", "category": error.category.label if error else ""}
    if request.htmx:
        return render(request, "integrations/partials/connection_status.html",
                      {"connection": connection, "provider": _provider_of(connection), "check": check,
                       "can_write": request.membership.can_write})
    if error is None:
        messages.success(request, f"{connection.name} answers: the connection works.")
    else:
        messages.error(request, " ".join(filter(None, [f"The test failed: {error.message}", check["hint"]])))
    return redirect("connections:detail", code=connection.code)


@require_http_methods(["GET", "POST"])
@org_required
def connection_reconnect(request, code):
    """New credentials (optional), checked at once; the runs the outage stopped are retried."""
    _require_write(request)
    connection = _connection(request, code)
    provider = _provider_of(connection)
    form = CredentialsForm(provider, request.POST if request.method == "POST" else None)
    failure = None
    if request.method == "POST" and form.is_valid():
        credentials = form.credentials()
        problems = {path: messages_ for path, messages_ in connection_clean(connection, credentials=credentials).items()
                    if path.startswith("credentials.")} if credentials else {}
        if problems:
            form.add_service_errors(ValidationError(problems))
        else:
            try:
                connection, resumed = connection_reconnect_and_resume(connection=connection, credentials=credentials)
            except ConnectorError as exc:
                failure = {"message": exc.message, "hint": connection_hint(exc), "category": exc.category.label}
                connection.refresh_from_db()
            else:
                text = f"{connection.name} is connected again."
                if resumed:
                    text += f" {len(resumed)} stopped run{'s' if len(resumed) != 1 else ''} resumed."
                messages.success(request, text)
                return redirect("connections:detail", code=connection.code)
    return render(request, "integrations/connection_reconnect.html",
                  {"connection": connection, "provider": provider, "form": form, "failure": failure})


@require_POST
@org_required
def connection_refresh_schema(request, code):
    """"Refresh schema": describe every object of the system again and keep the answer."""
    connection = _connection(request, code)
    try:
        schemas = connection_schema_refresh(connection=connection)
    except ConnectorError as exc:
        messages.error(request, " ".join(filter(None, [
            f"{connection.name} could not describe its objects: {exc.message}", connection_hint(exc)])))
    else:
        fields = sum(len(schema.fields) for schema in schemas.values())
        messages.success(request, f"Schema refreshed: {len(schemas)} object{'s' if len(schemas) != 1 else ''} "
                                  f"with {fields} fields.")
    return redirect(reverse("connections:detail", kwargs={"code": connection.code}) + "#schema")


@require_http_methods(["GET", "POST"])
@org_required
def connection_edit(request, code):
    """Name, settings, max concurrency and, optionally, new credentials (connection_update)."""
    _require_write(request)
    connection = _connection(request, code)
    provider = _provider_of(connection)
    form = ConnectionForm(provider, request.POST if request.method == "POST" else None, connection=connection)
    if request.method == "POST" and form.is_valid():
        changes = {"name": form.cleaned_data["name"], "config": form.config(),
                   "max_concurrency": form.cleaned_data["max_concurrency"]}
        credentials = form.credentials()
        if credentials is not None:
            changes["credentials"] = credentials
        try:
            connection_update(connection=connection, **changes)
        except ValidationError as exc:
            form.add_service_errors(exc)
            connection = _connection(request, code)  # the page's title keeps the stored name
        else:
            text = f"{connection.name} is saved."
            if credentials is not None:
                text += " Reconnect it to check the new credentials and make it active again."
            messages.success(request, text)
            return redirect("connections:detail", code=connection.code)
    return render(request, "integrations/connection_edit.html",
                  {"connection": connection, "provider": provider, "form": form})


@require_http_methods(["GET", "POST"])
@org_required
def connection_delete_view(request, code):
    """A confirmation page; POST deletes, unless mappings use the connection (then it says which)."""
    _require_write(request)
    connection = _connection(request, code)
    if request.method == "POST":
        try:
            connection_delete(connection=connection)
        except ConnectionInUse as exc:
            messages.error(request, str(exc))
            return redirect("connections:detail", code=connection.code)
        messages.success(request, f"{connection.name} is deleted.")
        return redirect("connections:list")
    return render(request, "integrations/connection_delete.html",
                  {"connection": connection, "mappings": _mappings_using(connection)})
