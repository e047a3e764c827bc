"""Forms of the runs and errors pages: the API's filtersets dressed for a browser, and the inputs of the actions.

The filters are the API's own (syncs.filtersets): only their widgets change here (checkboxes, date pickers, a
select of the organization's mappings), so a filter means the same in the browser, the API and the CLI.
"""

import uuid

from django import forms

from mappings.models import Mapping
from syncs.filtersets import RecordErrorFilterSet, SyncRunFilterSet
from syncs.models import UNRESOLVED_ERROR_STATUSES

# The filters of the errors page, in the order of its filter bar; the API's others (run, blocking, level) are
# honoured from the query string (links from a run's page) but not offered as inputs.
ERROR_FILTERS = ("search", "status", "category", "code", "mapping", "target_connection", "since", "until")
# Set by the filter bar's form, so a landing without it gets the defaults (unresolved errors, no test runs)
# while a form submitted with every box unticked means "any".
FILTERED = "filtered"


class BrowserFilters:
    """Mixed into a page's copy of an API filterset, whose filters it then dresses with a browser's widgets and
    labels.

    A filter builds its form field once and caches it (django-filter's `_field`), and a filterset's filters are
    deep copies of the class's, cache included: once the OpenAPI schema has been generated (it reads every
    filter's field), widgets and labels set on the copies were silently ignored, and the pages' checkboxes became
    multi-selects in any process that had served /api/v1/schema/. The copies' cached fields are dropped here, so
    each is built from what the page sets."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        for filter_ in self.filters.values():
            vars(filter_).pop("_field", None)


def _widgets(filterset, widgets, labels, empty_labels=None):
    for name, widget in widgets.items():
        filterset.filters[name].extra["widget"] = widget
    for name, label in labels.items():
        filterset.filters[name].label = label
    for name, empty_label in (empty_labels or {}).items():
        filterset.filters[name].extra["empty_label"] = empty_label


def with_defaults(data, defaults):
    """The query of a list page: the request's own, or the defaults on a first landing."""
    if FILTERED in data:
        return data
    data = data.copy()
    for name, values in defaults.items():
        data.setlist(name, list(values))
    return data


class RunFilters(BrowserFilters, SyncRunFilterSet):
    """The runs list's filters: mapping, status, trigger, queued between two dates, test runs."""

    DEFAULTS = {"is_test": ["false"]}

    def __init__(self, data=None, *args, request=None, **kwargs):
        super().__init__(data, *args, request=request, **kwargs)
        mappings = Mapping.objects.for_org(request.org).order_by("name", "pk").values_list("code", "name")
        _widgets(self, {
            "mapping": forms.Select(choices=[("", "Any mapping"), *((str(code), name) for code, name in mappings)]),
            "status": forms.CheckboxSelectMultiple,
            "trigger": forms.CheckboxSelectMultiple,
            "queued_after": forms.DateInput(attrs={"type": "date"}),
            "queued_before": forms.DateInput(attrs={"type": "date"}),
            "is_test": forms.Select(choices=[("false", "Hidden"), ("true", "Only test runs"), ("", "Shown")]),
        }, {"queued_after": "Queued from", "queued_before": "Queued before", "is_test": "Test runs"})

    @property
    def is_filtered(self):
        return any(self.data.getlist(name) for name in self.filters if name != "is_test") or \
            self.data.get("is_test", "false") != "false"


class ErrorFilters(BrowserFilters, RecordErrorFilterSet):
    """The errors dashboard's filters: the API's errors filterset with a browser's widgets."""

    DEFAULTS = {"status": UNRESOLVED_ERROR_STATUSES}

    def __init__(self, data=None, *args, request=None, **kwargs):
        super().__init__(data, *args, request=request, **kwargs)
        _widgets(self, {
            "status": forms.CheckboxSelectMultiple,
            "category": forms.CheckboxSelectMultiple,
            "since": forms.DateInput(attrs={"type": "date"}),
            "until": forms.DateInput(attrs={"type": "date"}),
            "search": forms.TextInput(attrs={"type": "search", "placeholder": "Message, record id or code"}),
            "code": forms.TextInput(attrs={"placeholder": "e.g. invalid_email"}),
        }, {"target_connection": "Target", "since": "From", "until": "Before", "code": "Error code"},
            {"mapping": "Any mapping", "target_connection": "Any target"})

    def as_body(self):
        """The valid query as the `filter` object of a bulk action (the API's shape): names of the filterset
        only, lists for the multiple-choice ones, blanks dropped."""
        body = {}
        for name, filter_ in self.base_filters.items():
            values = [value for value in self.data.getlist(name) if value.strip()]
            if not values:
                continue
            several = isinstance(filter_, type(self.base_filters["status"]))
            body[name] = values if several else values[-1]
        return body


class ErrorIdsField(forms.Field):
    """Ids of record errors (UUIDs); whether they are the organization's is the view's question."""

    widget = forms.MultipleHiddenInput

    def to_python(self, value):
        values = value if isinstance(value, list | tuple) else ([value] if value else [])
        try:
            return list(dict.fromkeys(uuid.UUID(str(item)) for item in values))
        except ValueError:
            raise forms.ValidationError("An error id is not valid.", code="invalid") from None


class SelectionForm(forms.Form):
    """Errors picked in the list (their ids), or every error the list's filter matches."""

    ids = ErrorIdsField(required=False)
    all_matching = forms.BooleanField(required=False)

    def clean(self):
        cleaned = super().clean()
        if not cleaned.get("ids") and not cleaned.get("all_matching") and not self.errors:
            raise forms.ValidationError("Select at least one error.", code="empty")
        return cleaned


class IgnoreForm(forms.Form):
    reason = forms.CharField(max_length=2000, widget=forms.Textarea(attrs={"rows": 2}),
                             help_text="Kept on each error and shown to everyone, e.g. “test records, never synced”.")


class ResolveForm(forms.Form):
    note = forms.CharField(max_length=2000, required=False, widget=forms.Textarea(attrs={"rows": 2}),
                           label="Note (optional)", help_text="What was fixed, and where.")
