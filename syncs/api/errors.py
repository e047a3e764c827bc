"""Record errors: the list and its filters, detail with snapshots and attempt history, and every way out of an
error (retry, bulk retry, resolve, ignore, edit and retry, a replay's preview); the review queue; error groups; the
bulk actions a worker carries out for a filter or a long id list."""

import django_filters
from django_filters.rest_framework import DjangoFilterBackend
from drf_spectacular.utils import PolymorphicProxySerializer, extend_schema, extend_schema_field
from rest_framework import exceptions, filters, mixins, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.response import Response

from accounts.api import IDEMPOTENCY_HEADER, TenantViewSetMixin, idempotent
from config.api import (
    PlanEntrySerializer,
    RecentFirstCursorPagination,
    RejectUnknownFieldsMixin,
    StandardPagination,
)
from config.openapi import NO_NUL
from mappings.models import Mapping
from syncs.api.common import (
    ForceSerializer,
    MappingRefSerializer,
    RetrySummarySerializer,
    StateConflict,
    refusals_as_conflicts,
    run_codes,
)
from syncs.bulk import bulk_action_request
from syncs.filtersets import RecordErrorFilterSet
from syncs.fixes import KINDS, ErrorGroupNotFound, error_group_fix_apply, error_group_fixes
from syncs.groups import error_group_retry, error_groups, group_retries_latest
from syncs.models import BulkAction, BulkActionKind, ErrorGroupRetry, ErrorStatus, RecordError, Resolution
from syncs.previews import errors_replay_preview
from syncs.retries import error_retry, errors_retry
from syncs.review import error_edit_and_retry, error_ignore, error_resolve, errors_close, review_queue

# Up to SYNC_IDS ids a bulk action answers with its result; a filter, or more ids, is done by a worker and answered
# at once with the bulk action to follow (GET /api/v1/bulk-actions/{id}/).
SYNC_IDS = 1000
MAX_IDS = 100_000
MAX_PREVIEW_IDS = 100


# --- serializers --------------------------------------------------------------------------------------------------


class RecordErrorSerializer(serializers.ModelSerializer):
    id = serializers.UUIDField(source="code", read_only=True)
    run = serializers.SlugRelatedField(slug_field="code", read_only=True)
    mapping = MappingRefSerializer(read_only=True)
    code = serializers.CharField(source="error_code", read_only=True, help_text="A stable error code.")
    resolution = serializers.ChoiceField(choices=Resolution.choices, allow_blank=True, read_only=True,
                                         help_text="How it was resolved; empty while unresolved.")

    class Meta:
        model = RecordError
        fields = ["id", "run", "mapping", "level", "category", "code", "field", "message", "retryable", "durability",
                  "direction", "source_record_id", "target_record_id", "status", "attempts", "next_retry_at",
                  "retry_after_until", "resolution", "resolved_at", "fingerprint", "first_seen_at", "created_at"]
        read_only_fields = fields


class ErrorAttemptSerializer(serializers.ModelSerializer):
    id = serializers.UUIDField(source="code", read_only=True)
    run = serializers.SlugRelatedField(slug_field="code", read_only=True)
    resolution = serializers.ChoiceField(choices=Resolution.choices, allow_blank=True, read_only=True)

    class Meta:
        model = RecordError
        fields = ["id", "run", "status", "resolution", "category", "message", "created_at"]
        read_only_fields = fields


class RecordErrorDetailSerializer(RecordErrorSerializer):
    origin_run = serializers.SlugRelatedField(
        slug_field="code", read_only=True, allow_null=True,
        help_text="The run where this record first failed: it is not recovered while this error is open.",
    )
    history = ErrorAttemptSerializer(
        many=True, read_only=True,
        help_text="Every error of the same record in the same mapping, oldest first (this one included).",
    )

    class Meta(RecordErrorSerializer.Meta):
        fields = [*RecordErrorSerializer.Meta.fields, "detail", "snapshot_before", "snapshot_after", "edited_payload",
                  "edited_at", "origin_run", "resolution_note", "last_retried_at", "updated_at", "history"]
        read_only_fields = fields


def _error_filter_schema():
    """The JSON schema of a bulk action's `filter`, read from the errors list's filterset it is checked with
    (RecordErrorFilterSet.from_body): its names only, a string each, one of the choices or a list of them for
    a multiple-choice filter, an id (or nothing) for a reference."""
    properties = {}
    for name, filter_ in RecordErrorFilterSet.base_filters.items():
        described = {"description": str(filter_.extra.get("help_text", ""))}
        if isinstance(filter_, django_filters.MultipleChoiceFilter):
            choice = {"type": "string", "enum": [value for value, _label in filter_.extra["choices"]]}
            properties[name] = {"oneOf": [choice, {"type": "array", "items": choice}], **described}
        elif isinstance(filter_, django_filters.ModelChoiceFilter):
            # An empty value is "no filter", as in the list's query string.
            properties[name] = {"oneOf": [{"type": "string", "format": "uuid"}, {"type": "string", "maxLength": 0}],
                                **described}
        else:
            properties[name] = {"type": "string", "pattern": NO_NUL, **described}
    return {"type": "object", "additionalProperties": False, "properties": properties}


@extend_schema_field(_error_filter_schema())
class ErrorFilterField(serializers.DictField):
    """A bulk action's filter: checked by the errors list's filterset, documented with its names and types."""


class ErrorSelectionSerializer(RejectUnknownFieldsMixin, serializers.Serializer):
    """Which errors a bulk action applies to: a list of ids, or every error matching the list's filters."""

    ids = serializers.ListField(child=serializers.UUIDField(), required=False, allow_empty=False, max_length=MAX_IDS,
                                help_text=f"Ids of the errors. Up to {SYNC_IDS} are acted on at once; more are "
                                          "acted on by a worker, like a filter.")
    filter = ErrorFilterField(
        required=False,
        help_text="Every open error matching these filters, named as the list's query parameters: category, code, "
                  "level, status, mapping, target_connection, run, blocking, since, until, search. Needs "
                  "all_matching. Acted on by a worker: the answer is the bulk action to follow.",
    )
    all_matching = serializers.BooleanField(
        required=False, default=False,
        help_text="Confirms that the action applies to every error the filter matches (an empty filter matches "
                  "every open error of the organization).",
    )

    def validate(self, attrs):
        if ("ids" in attrs) == ("filter" in attrs):
            raise serializers.ValidationError("Give either ids or filter.")
        if "filter" in attrs and not attrs["all_matching"]:
            raise serializers.ValidationError({"all_matching": [
                "Set all_matching to true to act on every error the filter matches."]})
        return attrs

    @property
    def in_background(self):
        """Whether a worker does it: for a filter, or for more than SYNC_IDS ids."""
        return len(self.validated_data.get("ids", ())) > SYNC_IDS or "filter" in self.validated_data

    def selection(self, *, request, queryset):
        """The keyword arguments of a bulk service: error_ids or queryset."""
        if "ids" in self.validated_data:
            return {"error_ids": errors_by_ids(request.org, self.validated_data["ids"])}
        matching = RecordErrorFilterSet.from_body(self.validated_data["filter"], request=request, queryset=queryset)
        return {"queryset": matching.qs}

    def action_selection(self, *, request, queryset):
        """The selection of a bulk action, checked now: a bad filter is a 400 and an id that is not yours a 404
        before anything is recorded."""
        if "ids" in self.validated_data:
            return {"ids": errors_by_ids(request.org, self.validated_data["ids"])}
        RecordErrorFilterSet.from_body(self.validated_data["filter"], request=request, queryset=queryset)
        return {"filter": self.validated_data["filter"]}


class BulkRetrySerializer(ErrorSelectionSerializer):
    force = serializers.BooleanField(
        default=False, help_text="Overwrite a target record that changed after the failure."
    )


class BulkIgnoreSerializer(ErrorSelectionSerializer):
    reason = serializers.CharField(max_length=2000, help_text="Why these records are ignored.")


class BulkResolveSerializer(ErrorSelectionSerializer):
    note = serializers.CharField(required=False, default="", allow_blank=True, max_length=2000)


class BulkCloseSummarySerializer(serializers.Serializer):
    closed = serializers.IntegerField(read_only=True)
    skipped = serializers.DictField(child=serializers.IntegerField(), read_only=True,
                                    help_text="Errors left as they were, by reason: already_resolved.")


class BulkActionSerializer(serializers.ModelSerializer):
    """A bulk retry, ignore or resolve done by a worker: poll its url until its status is succeeded or failed."""

    id = serializers.UUIDField(source="code", read_only=True)
    url = serializers.HyperlinkedIdentityField(view_name="bulk-action-detail", lookup_field="code",
                                               lookup_url_kwarg="code", help_text="Where to follow it.")
    filter = serializers.SerializerMethodField(help_text="The filter it acts on; null when it names ids.")
    ids = serializers.SerializerMethodField(help_text="How many ids it names; null for a filter.")
    summary = serializers.JSONField(
        read_only=True, allow_null=True,
        help_text="Once it succeeded, the answer of the same action done at once: for a retry {queued, runs, "
                  "skipped}, for ignore and resolve {closed, skipped}. Null until then.",
    )

    class Meta:
        model = BulkAction
        fields = ["id", "url", "kind", "status", "filter", "ids", "options", "summary", "failure", "created_at",
                  "started_at", "finished_at"]
        read_only_fields = fields

    def get_filter(self, action) -> dict | None:
        return action.selection.get("filter")

    def get_ids(self, action) -> int | None:
        ids = action.selection.get("ids")
        return None if ids is None else len(ids)


BULK_RETRY_ANSWER = PolymorphicProxySerializer(
    component_name="BulkRetryAnswer", serializers=[RetrySummarySerializer, BulkActionSerializer],
    resource_type_field_name=None,
)


class PreviewRequestSerializer(RejectUnknownFieldsMixin, serializers.Serializer):
    ids = serializers.ListField(child=serializers.UUIDField(), allow_empty=False, max_length=MAX_PREVIEW_IDS)


class ResolveSerializer(RejectUnknownFieldsMixin, serializers.Serializer):
    note = serializers.CharField(required=False, default="", allow_blank=True, max_length=2000)


class IgnoreSerializer(RejectUnknownFieldsMixin, serializers.Serializer):
    reason = serializers.CharField(max_length=2000, help_text="Why this record is ignored.")


class EditAndRetrySerializer(ForceSerializer):
    payload = serializers.DictField(help_text="The corrected record, as it should be written to the target.")


class GroupRetryStateSerializer(serializers.ModelSerializer):
    id = serializers.UUIDField(source="code", read_only=True)
    probe_error = serializers.SlugRelatedField(slug_field="code", read_only=True, allow_null=True,
                                               help_text="The error of the record retried first.")

    class Meta:
        model = ErrorGroupRetry
        fields = ["id", "status", "reason", "probe_error", "retried", "created_at", "updated_at"]
        read_only_fields = fields


class ErrorGroupSerializer(serializers.Serializer):
    fingerprint = serializers.CharField(read_only=True)
    mapping = MappingRefSerializer(read_only=True)
    category = serializers.CharField(read_only=True)
    code = serializers.CharField(read_only=True)
    field = serializers.CharField(read_only=True)
    count = serializers.IntegerField(read_only=True)
    first_seen = serializers.DateTimeField(read_only=True)
    last_seen = serializers.DateTimeField(read_only=True)
    sample = serializers.UUIDField(read_only=True, help_text="The id of the group's most recent error.")
    last_retry = GroupRetryStateSerializer(read_only=True, allow_null=True,
                                           help_text="The group's latest retry: waiting for its first record, the "
                                                     "rest retried, or stopped with the reason.")


class GroupRetrySummarySerializer(RetrySummarySerializer):
    group_retry = GroupRetryStateSerializer(read_only=True)
    probe_error = serializers.UUIDField(read_only=True, help_text="The error retried first.")
    remaining = serializers.IntegerField(read_only=True, help_text="Errors retried once the first succeeds.")


class FixParamSerializer(serializers.Serializer):
    name = serializers.CharField(read_only=True, help_text="The key of the value in the apply call's params.")
    label = serializers.CharField(read_only=True)
    help = serializers.CharField(read_only=True)
    suggested = serializers.JSONField(read_only=True, allow_null=True,
                                      help_text="The value Resync would pick; null when it is yours to choose.")
    choices = serializers.ListField(child=serializers.CharField(), read_only=True,
                                    help_text="The values allowed; empty when any value the field takes will do.")


class FixChangeSerializer(serializers.Serializer):
    subject = serializers.ChoiceField(choices=["field_mapping", "mapping"], read_only=True,
                                      help_text="A field mapping of the mapping, or the mapping's own settings.")
    label = serializers.CharField(read_only=True, help_text="Which one, as people read it: “phone → phone”.")
    before = serializers.JSONField(
        read_only=True, allow_null=True,
        help_text="The field mapping as it is (source_field, target_field, transforms, reverse_transforms, "
                  "required, default_value, skip_invalid), null when the fix adds one; or the mapping settings it "
                  "changes, as they are.")
    after = serializers.JSONField(read_only=True, help_text="The same once the fix is applied. A value the caller "
                                                            "gives (a default) is null here until then.")
    changed = serializers.ListField(child=serializers.CharField(), read_only=True,
                                    help_text="The keys whose values differ.")


class FixSuggestionSerializer(serializers.Serializer):
    kind = serializers.ChoiceField(choices=KINDS, read_only=True, help_text="A stable id of the fix: POST it to apply.")
    title = serializers.CharField(read_only=True)
    explanation = serializers.CharField(read_only=True)
    params = FixParamSerializer(many=True, read_only=True, help_text="Values to give when applying it.")
    changes = FixChangeSerializer(many=True, read_only=True, help_text="What it would change in the mapping.")


class FixApplySerializer(RejectUnknownFieldsMixin, serializers.Serializer):
    kind = serializers.ChoiceField(choices=KINDS, help_text="The kind of a suggestion of this group.")
    params = serializers.DictField(required=False, default=dict,
                                   help_text="The fix's parameters by name, as its suggestion lists them: "
                                             '{"value": "Unknown"} for set_default, {"field": "phone"} for '
                                             "refresh_schema_and_remap; none for the others.")


class FixAppliedSerializer(serializers.Serializer):
    kind = serializers.ChoiceField(choices=KINDS, read_only=True)
    changed = serializers.BooleanField(read_only=True, help_text="False when the change was in the mapping already "
                                                                 "(applied twice): nothing was changed again.")
    changes = FixChangeSerializer(many=True, read_only=True, help_text="What was changed in the mapping.")
    mapping = MappingRefSerializer(read_only=True)
    retry = GroupRetrySummarySerializer(read_only=True, allow_null=True,
                                        help_text="The group retry started: one record first, the rest once it has "
                                                  "synced. Null when none was started (see retry_refused).")
    retry_refused = serializers.CharField(read_only=True, help_text="Why no group retry was started, or empty: a "
                                                                    "retry already waiting, nothing left to retry.")


# --- views ------------------------------------------------------------------------------------------------------


def errors_by_ids(organization, ids):
    """The organization's errors with these ids; any other id (missing, or another organization's) is a 404 and
    nothing is done."""
    found = dict(RecordError.objects.for_org(organization).filter(code__in=ids).values_list("code", "pk"))
    for code in ids:
        if code not in found:
            raise exceptions.NotFound(f"No record error with id {code}.")
    return [found[code] for code in dict.fromkeys(ids)]


class RecordErrorViewSet(TenantViewSetMixin, mixins.ListModelMixin, mixins.RetrieveModelMixin,
                         viewsets.GenericViewSet):
    """Failing, warned and ignored records of your runs, newest first, and every way out of them."""

    tenant_model = RecordError
    serializer_class = RecordErrorSerializer
    filterset_class = RecordErrorFilterSet
    pagination_class = RecentFirstCursorPagination
    ordering_fields = ["created_at"]
    ordering = ["-created_at", "-id"]

    def scope_queryset(self, queryset):
        return queryset.select_related("run", "mapping")

    def get_serializer_class(self):
        return RecordErrorDetailSerializer if self.action == "retrieve" else RecordErrorSerializer

    def retrieve(self, request, *args, **kwargs):
        return Response(self.detail_data(self.get_object()))

    def detail_data(self, error):
        if error.source_record_id:
            error.history = list(self.get_queryset().filter(
                mapping_id=error.mapping_id, source_record_id=error.source_record_id
            ).order_by("created_at", "pk"))
        else:
            error.history = [error]
        return RecordErrorDetailSerializer(error).data

    @extend_schema(summary="Retry an error", request=ForceSerializer, responses={202: RetrySummarySerializer})
    @action(detail=True, methods=["post"])
    def retry(self, request, *args, **kwargs):
        """Replay this record now, read fresh from its source where the connector can."""
        error = self.get_object()
        options = ForceSerializer(data=request.data)
        options.is_valid(raise_exception=True)
        with refusals_as_conflicts():
            summary = error_retry(error=error, force=options.validated_data["force"])
        answer = RetrySummarySerializer.answer(summary, organization=request.org)
        return Response(answer, status=status.HTTP_202_ACCEPTED)

    @extend_schema(summary="Retry errors by ids or by filter", request=BulkRetrySerializer,
                   responses={202: BULK_RETRY_ANSWER}, parameters=[IDEMPOTENCY_HEADER])
    @action(detail=False, methods=["post"], url_path="bulk-retry")
    @idempotent
    def bulk_retry(self, request, *args, **kwargs):
        """Retry the listed errors, or every error matching a filter, in one replay run per mapping. One id that
        is not yours answers 404 and nothing is retried. Up to 1000 ids answer what was queued; a filter or more
        ids answer the bulk action a worker carries out (its summary then says what was queued), and each replay
        takes its errors (status retrying) when it starts."""
        body = BulkRetrySerializer(data=request.data)
        body.is_valid(raise_exception=True)
        force = body.validated_data["force"]
        if body.in_background:
            return self.bulk_action(body, BulkActionKind.RETRY, options={"force": force})
        summary = errors_retry(organization=request.org, resolution=Resolution.BULK_RETRY, force=force,
                               **body.selection(request=request, queryset=self.get_queryset()))
        answer = RetrySummarySerializer.answer(summary, organization=request.org)
        return Response(answer, status=status.HTTP_202_ACCEPTED)

    @extend_schema(summary="Ignore errors by ids or by filter", request=BulkIgnoreSerializer,
                   responses={200: BulkCloseSummarySerializer, 202: BulkActionSerializer})
    @action(detail=False, methods=["post"], url_path="bulk-ignore")
    def bulk_ignore(self, request, *args, **kwargs):
        """Close the listed errors, or every open error matching a filter, on purpose; the reason is kept on
        each. One id that is not yours answers 404 and nothing is ignored. A filter or more than 1000 ids answer
        202 with the bulk action a worker carries out."""
        body = BulkIgnoreSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        return self.bulk_close(body, BulkActionKind.IGNORE, ErrorStatus.IGNORED, note=body.validated_data["reason"])

    @extend_schema(summary="Resolve errors by ids or by filter", request=BulkResolveSerializer,
                   responses={200: BulkCloseSummarySerializer, 202: BulkActionSerializer})
    @action(detail=False, methods=["post"], url_path="bulk-resolve")
    def bulk_resolve(self, request, *args, **kwargs):
        """Close the listed errors, or every open error matching a filter, as fixed by hand. One id that is not
        yours answers 404 and nothing is resolved. A filter or more than 1000 ids answer 202 with the bulk action
        a worker carries out."""
        body = BulkResolveSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        return self.bulk_close(body, BulkActionKind.RESOLVE, ErrorStatus.RESOLVED, note=body.validated_data["note"])

    def bulk_close(self, body, kind, closed_status, *, note):
        if body.in_background:
            return self.bulk_action(body, kind, options={"note": note})
        summary = errors_close(organization=self.request.org, status=closed_status, note=note,
                               **body.selection(request=self.request, queryset=self.get_queryset()))
        return Response(BulkCloseSummarySerializer(summary).data)

    def bulk_action(self, body, kind, *, options):
        """Record the action for a worker and answer 202 with it."""
        request = self.request
        action = bulk_action_request(
            organization=request.org, kind=kind, options=options,
            selection=body.action_selection(request=request, queryset=self.get_queryset()),
        )
        return Response(BulkActionSerializer(action, context={"request": request}).data,
                        status=status.HTTP_202_ACCEPTED)

    @extend_schema(summary="Resolve an error", request=ResolveSerializer, responses={200: RecordErrorDetailSerializer})
    @action(detail=True, methods=["post"])
    def resolve(self, request, *args, **kwargs):
        """Close the error as fixed, with an optional note."""
        error = self.get_object()
        body = ResolveSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        with refusals_as_conflicts():
            error_resolve(error=error, note=body.validated_data["note"])
        return Response(self.detail_data(error))

    @extend_schema(summary="Ignore an error", request=IgnoreSerializer, responses={200: RecordErrorDetailSerializer})
    @action(detail=True, methods=["post"])
    def ignore(self, request, *args, **kwargs):
        """Close the error on purpose; the reason is kept and shown."""
        error = self.get_object()
        body = IgnoreSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        with refusals_as_conflicts():
            error_ignore(error=error, reason=body.validated_data["reason"])
        return Response(self.detail_data(error))

    @extend_schema(summary="Correct a record and retry it", request=EditAndRetrySerializer,
                   responses={202: RetrySummarySerializer})
    @action(detail=True, methods=["post"], url_path="edit-and-retry")
    def edit_and_retry(self, request, *args, **kwargs):
        """Replace the transformed record with a correction, checked against the target's schema (field errors
        answer 400 keyed by field), and retry it."""
        error = self.get_object()
        body = EditAndRetrySerializer(data=request.data)
        body.is_valid(raise_exception=True)
        if error.is_resolved:
            raise StateConflict("This error is already resolved.", code="already_resolved")
        with refusals_as_conflicts():
            summary = error_edit_and_retry(error=error, payload=body.validated_data["payload"],
                                           force=body.validated_data["force"])
        if not summary["queued"]:
            reason = next(iter(summary["skipped"]), "not_retriable")
            raise StateConflict(f"The correction was saved but not retried ({reason.replace('_', ' ')}).",
                                code=reason)
        answer = RetrySummarySerializer.answer(summary, organization=request.org)
        return Response(answer, status=status.HTTP_202_ACCEPTED)

    @extend_schema(summary="Preview a replay", request=PreviewRequestSerializer,
                   responses={200: PlanEntrySerializer(many=True)})
    @action(detail=False, methods=["post"], pagination_class=None, filter_backends=[])
    def preview(self, request, *args, **kwargs):
        """What a replay of these errors would write, per record, next to the target's current values. Nothing
        is written and no error changes."""
        body = PreviewRequestSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        plans = errors_replay_preview(organization=request.org,
                                      error_ids=errors_by_ids(request.org, body.validated_data["ids"]))
        return Response(PlanEntrySerializer(plans, many=True).data)

    @extend_schema(summary="The review queue", responses={200: RecordErrorSerializer(many=True)})
    @action(detail=False, methods=["get"], url_path="review-queue", pagination_class=StandardPagination,
            filter_backends=[])
    def review_queue(self, request, *args, **kwargs):
        """Record errors waiting for a person (manual review strategy, flagged replays), oldest first."""
        page = self.paginate_queryset(review_queue(organization=request.org))
        return self.get_paginated_response(RecordErrorSerializer(page, many=True).data)


class ErrorGroupViewSet(TenantViewSetMixin, viewsets.GenericViewSet):
    """Unresolved record errors grouped by fingerprint (same mapping, category, code and field): fix once, retry
    the group."""

    tenant_model = RecordError
    serializer_class = ErrorGroupSerializer
    filterset_class = RecordErrorFilterSet
    # Not StableOrderingFilter: a group is an aggregate row with no id, and ordering by id would split it.
    filter_backends = [DjangoFilterBackend, filters.OrderingFilter]
    ordering_fields = ["count", "first_seen", "last_seen"]
    lookup_field = "fingerprint"
    lookup_value_regex = "[0-9a-f]{40}"
    lookup_value_converter = "str"

    def list(self, request, *args, **kwargs):
        """Groups of the errors matching the filters, largest first."""
        errors = DjangoFilterBackend().filter_queryset(request, self.get_queryset(), self)
        groups = filters.OrderingFilter().filter_queryset(
            request, error_groups(organization=request.org, queryset=errors), self
        )
        # The fingerprint breaks ties, so offset pages never repeat or skip a group.
        groups = groups.order_by(*[o for o in groups.query.order_by if o.lstrip("-") != "fingerprint"], "fingerprint")
        # Aggregated once, paged here: a page of the queryset would aggregate every error twice (count and page),
        # and an organization has hundreds of groups, not millions.
        page = self.paginate_queryset(list(groups))
        mappings = Mapping.objects.for_org(request.org).in_bulk({row["mapping_id"] for row in page})
        samples = dict(self.get_queryset().filter(pk__in=[row["sample_id"] for row in page])
                       .values_list("pk", "code"))
        retries = group_retries_latest(organization=request.org, fingerprints={row["fingerprint"] for row in page})
        rows = [{**row, "mapping": mappings[row["mapping_id"]], "code": row["error_code"],
                 "sample": samples[row["sample_id"]], "last_retry": retries.get(row["fingerprint"])} for row in page]
        return self.get_paginated_response(ErrorGroupSerializer(rows, many=True).data)

    @extend_schema(summary="Retry an error group", request=None, responses={202: GroupRetrySummarySerializer})
    @action(detail=True, methods=["post"])
    def retry(self, request, *args, **kwargs):
        """Retry one record of the group first; when it succeeds, the rest follow in a bulk retry."""
        fingerprint = kwargs["fingerprint"]
        if not self.get_queryset().filter(fingerprint=fingerprint).exists():
            raise exceptions.NotFound(f"No error group {fingerprint}.")
        with refusals_as_conflicts():
            summary = error_group_retry(organization=request.org, fingerprint=fingerprint)
        probe = self.get_queryset().get(pk=summary["probe_error"])
        answer = GroupRetrySummarySerializer.answer(summary, organization=request.org, probe_error=probe.code)
        return Response(answer, status=status.HTTP_202_ACCEPTED)

    @extend_schema(summary="Suggested fixes of an error group", request=None,
                   responses={200: FixSuggestionSerializer(many=True)})
    @action(detail=True, methods=["get"], pagination_class=None, filter_backends=[])
    def suggestions(self, request, *args, **kwargs):
        """The changes to the mapping that fix the group's cause, each with what it would change (before and
        after) and the values it needs; empty when Resync knows none, or the mapping has them already."""
        fingerprint = kwargs["fingerprint"]
        try:
            suggestions = error_group_fixes(organization=request.org, fingerprint=fingerprint)
        except ErrorGroupNotFound:
            raise exceptions.NotFound(f"No error group {fingerprint}.") from None
        return Response(FixSuggestionSerializer(suggestions, many=True).data)

    @extend_schema(summary="Apply a suggested fix and retry the group", request=FixApplySerializer,
                   responses={202: FixAppliedSerializer, 200: FixAppliedSerializer})
    @action(detail=True, methods=["post"], url_path="apply")
    def apply_fix(self, request, *args, **kwargs):
        """Change the mapping as the suggestion says (checked like any change of the mapping: its problems
        answer 400 keyed by field), then retry the group: one record first, the rest once it has synced (202).
        Applying a fix that is in the mapping already changes nothing again and only retries (200 when a retry
        is already waiting). A fix that does not fit the group's cause answers 409; a bad value, 400."""
        fingerprint = kwargs["fingerprint"]
        # The group first: another organization's fingerprint is not found, whatever the body says (a 400 about
        # the body would tell the caller the group exists somewhere).
        if not self.get_queryset().filter(fingerprint=fingerprint).exists():
            raise exceptions.NotFound(f"No error group {fingerprint}.")
        body = FixApplySerializer(data=request.data)
        body.is_valid(raise_exception=True)
        try:
            with refusals_as_conflicts():
                result = error_group_fix_apply(
                    organization=request.org, fingerprint=fingerprint, kind=body.validated_data["kind"],
                    params=body.validated_data["params"], user=request.user,
                )
        except ErrorGroupNotFound:
            raise exceptions.NotFound(f"No error group {fingerprint}.") from None
        retry = result["retry"]
        if retry is not None:
            probe = self.get_queryset().get(pk=retry["probe_error"])
            retry = {**retry, "runs": run_codes(retry["runs"], organization=request.org), "probe_error": probe.code}
        answer = FixAppliedSerializer({**result, "retry": retry}).data
        return Response(answer, status=status.HTTP_202_ACCEPTED if retry is not None else status.HTTP_200_OK)


class BulkActionViewSet(TenantViewSetMixin, mixins.ListModelMixin, mixins.RetrieveModelMixin,
                        viewsets.GenericViewSet):
    """Bulk retries, ignores and resolves of record errors that a worker carries out, newest first: follow one
    until its status is succeeded (its summary says what was done) or failed (its failure says why)."""

    tenant_model = BulkAction
    serializer_class = BulkActionSerializer
    ordering_fields = ["created_at"]
    ordering = ["-created_at", "-id"]
