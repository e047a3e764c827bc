"""Query filters of the syncs API: runs, record errors and per-record sync status.

The error filter does not filter by itself: it validates the query and hands it to
`syncs.selectors.record_errors_matching`, so a filter means the same in the API, the CLI and the admin.
"""

import types

import django_filters
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema_field
from rest_framework import exceptions

from config.api import UtcDateTimeFilter
from integrations.errors import ErrorCategory
from integrations.models import Connection
from mappings.models import Mapping
from syncs.models import ErrorLevel, ErrorStatus, LinkStatus, RecordError, RecordLink, RunStatus, SyncRun, Trigger
from syncs.selectors import record_errors_matching


def _organization_rows(model):
    """A choice queryset limited to the caller's organization: another organization's code is not a choice."""

    def queryset(request):
        if request is None:
            return model.objects.none()
        return model.objects.for_org(request.org)

    return queryset


@extend_schema_field(OpenApiTypes.UUID)
class RunIdFilter(django_filters.ModelChoiceFilter):
    """A run named by its id when the filter is not a field of the model (the schema cannot infer the type)."""


class SyncRunFilterSet(django_filters.FilterSet):
    mapping = django_filters.UUIDFilter(field_name="mapping__code", help_text="The mapping's id.")
    status = django_filters.MultipleChoiceFilter(choices=RunStatus.choices, help_text="Repeat to match several.")
    trigger = django_filters.MultipleChoiceFilter(choices=Trigger.choices, help_text="Repeat to match several.")
    is_test = django_filters.BooleanFilter()
    queued_after = UtcDateTimeFilter(field_name="queued_at", lookup_expr="gte",
                                     help_text="Queued at or after this time (ISO 8601).")
    queued_before = UtcDateTimeFilter(field_name="queued_at", lookup_expr="lt",
                                      help_text="Queued before this time (ISO 8601).")

    class Meta:
        model = SyncRun
        fields = []


class RecordErrorFilterSet(django_filters.FilterSet):
    """The errors list's query, and the `filter` object of a bulk retry: both go to record_errors_matching."""

    category = django_filters.MultipleChoiceFilter(choices=ErrorCategory.choices, help_text="Repeat to match several.")
    code = django_filters.CharFilter(field_name="error_code", help_text="The error code, e.g. INVALID_EMAIL.")
    level = django_filters.MultipleChoiceFilter(choices=ErrorLevel.choices, help_text="Repeat to match several.")
    status = django_filters.MultipleChoiceFilter(choices=ErrorStatus.choices, help_text="Repeat to match several.")
    mapping = django_filters.ModelChoiceFilter(queryset=_organization_rows(Mapping), to_field_name="code",
                                               help_text="The mapping's id.")
    target_connection = django_filters.ModelChoiceFilter(
        field_name="mapping__target_connection", queryset=_organization_rows(Connection), to_field_name="code",
        help_text="The id of the mapping's target connection.",
    )
    run = django_filters.ModelChoiceFilter(queryset=_organization_rows(SyncRun), to_field_name="code",
                                           help_text="The run's id.")
    blocking = RunIdFilter(
        queryset=_organization_rows(SyncRun), to_field_name="code",
        help_text="A run's id: the unresolved errors that keep it from being recovered, in its retry chain or in "
                  "the later runs its failures moved to.",
    )
    since = UtcDateTimeFilter(field_name="created_at", lookup_expr="gte",
                              help_text="Created at or after this time (ISO 8601).")
    until = UtcDateTimeFilter(field_name="created_at", lookup_expr="lt",
                              help_text="Created before this time (ISO 8601).")
    search = django_filters.CharFilter(help_text="Part of the message, the source record id or the error code.")

    class Meta:
        model = RecordError
        fields = []

    def filter_queryset(self, queryset):
        given = {name: value for name, value in self.form.cleaned_data.items() if value not in (None, "", [])}
        matching = record_errors_matching(organization=self.request.org, **given)
        return queryset & matching

    @classmethod
    def from_body(cls, data, *, request, queryset):
        """The filterset of a JSON object (a bulk retry's `filter`); unknown names and wrong types answer 400."""
        unknown = sorted(set(data) - set(cls.base_filters))
        if unknown:
            raise exceptions.ValidationError({"filter": {name: ["Unknown filter."] for name in unknown}})
        query, wrong = {}, {}
        for name, value in data.items():
            several = isinstance(cls.base_filters[name], django_filters.MultipleChoiceFilter)
            values = value if several and isinstance(value, list) else [value]
            if not all(isinstance(item, str) for item in values):
                wrong[name] = ["Expected a string or a list of strings." if several else "Expected a string."]
            query[name] = values if several else value
        if wrong:
            raise exceptions.ValidationError({"filter": wrong})
        filterset = cls(query, request=request, queryset=queryset)
        if not filterset.is_valid():
            raise exceptions.ValidationError({"filter": {name: list(errors) for name, errors in
                                                         filterset.errors.items()}})
        return filterset

    @classmethod
    def matching(cls, data, *, organization):
        """The organization's errors matching a filter object outside a request (a bulk action's worker): the
        filters read the organization where they would read the request's."""
        scope = types.SimpleNamespace(org=organization)
        return cls.from_body(data, request=scope, queryset=RecordError.objects.for_org(organization)).qs


class RecordStatusFilterSet(django_filters.FilterSet):
    mapping = django_filters.UUIDFilter(field_name="mapping__code", help_text="The mapping's id.")
    target_connection = django_filters.UUIDFilter(field_name="mapping__target_connection__code",
                                                  help_text="The id of the mapping's target connection.")
    status = django_filters.MultipleChoiceFilter(choices=LinkStatus.choices, help_text="Repeat to match several.")
    source_record_id = django_filters.CharFilter()

    class Meta:
        model = RecordLink
        fields = []
