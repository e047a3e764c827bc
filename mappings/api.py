"""REST API of mappings and their field mappings: CRUD, validate, run now, test sync, pause and resume.

Registered in config.api_urls through ROUTES and URLS. Serializers check types; every rule of a mapping (JSON
shapes, transforms, schedules, one organization) is checked in mappings.services, where every caller passes.
"""

from drf_spectacular.utils import extend_schema, extend_schema_field, extend_schema_view
from rest_framework import exceptions, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.filters import SearchFilter
from rest_framework.response import Response

from accounts.api import IDEMPOTENCY_HEADER, TenantRelatedField, TenantViewSetMixin, idempotent
from accounts.models import Role
from config.api import (
    PlanEntrySerializer,
    RejectUnknownFieldsMixin,
    RunCountsSerializer,
    StableOrderingFilter,
    StrictFilterBackend,
)
from integrations.models import Connection
from mappings.filtersets import MappingFilterSet
from mappings.models import FieldMapping, Mapping
from mappings.services import (
    FILTER_OPERATORS,
    MappingBusy,
    mapping_create,
    mapping_delete,
    mapping_run_now,
    mapping_update,
    mapping_validate,
)
from mappings.transforms import TRANSFORMS
from syncs.models import RunStatus, Trigger
from syncs.pause import mapping_pause, mapping_resume
from syncs.previews import mapping_test_sync


def _flat_errors(detail, path=""):
    """Nested DRF errors → {"field_mappings[1].target_field": [...]}, the keys mappings.services uses too."""
    if isinstance(detail, dict):
        for key, value in detail.items():
            if isinstance(key, int):  # a ListSerializer's errors, by index
                yield from _flat_errors(value, f"{path}[{key}]")
                continue
            key = "" if key == "non_field_errors" and path else key
            yield from _flat_errors(value, f"{path}.{key}" if path and key else path or key)
    elif isinstance(detail, list) and any(isinstance(item, dict | list) for item in detail):
        for index, item in enumerate(detail):
            if item:
                yield from _flat_errors(item, f"{path}[{index}]")
    else:
        yield path, detail


# --- the shapes of the JSON settings (documentation; mappings.services checks them) --------------------------------


class MatchKeySerializer(serializers.Serializer):
    source = serializers.CharField(max_length=100, help_text="A field of the source object.")
    target = serializers.CharField(max_length=100, help_text="The field of the target object with the same value.")


class FilterRuleSerializer(serializers.Serializer):
    field = serializers.CharField(max_length=100, help_text="A field of the source record.")
    op = serializers.ChoiceField(choices=FILTER_OPERATORS)
    value = serializers.JSONField(
        required=False, help_text="Not with empty/not_empty; a list with in/not_in; text with contains."
    )
    reason = serializers.CharField(max_length=500, help_text="Why these records are ignored, shown to operators.")


class RetryRuleSerializer(serializers.Serializer):
    retry = serializers.BooleanField(required=False)
    attempts = serializers.IntegerField(min_value=0, max_value=20, required=False)
    delays = serializers.ListField(child=serializers.IntegerField(min_value=1), min_length=1, required=False)


class TransformSpecSerializer(serializers.Serializer):
    name = serializers.ChoiceField(choices=list(TRANSFORMS))
    args = serializers.DictField(required=False, allow_null=True, help_text="The transform's arguments.")


@extend_schema_field(MatchKeySerializer(many=True))
class MatchKeysField(serializers.JSONField):
    pass


@extend_schema_field(FilterRuleSerializer(many=True))
class FiltersField(serializers.JSONField):
    pass


@extend_schema_field(serializers.ListField(child=serializers.IntegerField(min_value=1)))
class RetryScheduleField(serializers.JSONField):
    pass


@extend_schema_field(serializers.DictField(child=RetryRuleSerializer()))
class RetryPolicyField(serializers.JSONField):
    pass


@extend_schema_field(TransformSpecSerializer(many=True))
class TransformsField(serializers.JSONField):
    pass


# --- mappings ----------------------------------------------------------------------------------------------------


class FieldMappingSerializer(RejectUnknownFieldsMixin, serializers.ModelSerializer):
    transforms = TransformsField(required=False, help_text="Applied in order, source → target.")
    reverse_transforms = TransformsField(required=False, help_text="Applied target → source in a two-way mapping.")
    default_value = serializers.CharField(max_length=500, allow_null=True, allow_blank=True, required=False)
    position = serializers.IntegerField(
        min_value=0, max_value=32767, required=False, help_text="Order of the field; defaults to its place in the list."
    )

    class Meta:
        model = FieldMapping
        fields = ["source_field", "target_field", "transforms", "reverse_transforms", "required", "default_value",
                  "skip_invalid", "position"]


class MappingSerializer(RejectUnknownFieldsMixin, serializers.ModelSerializer):
    id = serializers.UUIDField(source="code", read_only=True)
    source_connection = TenantRelatedField(Connection, help_text="The id of the connection read from.")
    target_connection = TenantRelatedField(Connection, help_text="The id of the connection written to.")
    match_keys = MatchKeysField(required=False, help_text="Find the target record of a source record not linked yet.")
    filters = FiltersField(required=False, help_text="Records to ignore, each with its reason.")
    retry_schedule = RetryScheduleField(required=False, help_text="Seconds before each automatic retry.")
    retry_policy = RetryPolicyField(required=False, help_text="Overrides per error category.")
    max_retries = serializers.IntegerField(min_value=0, max_value=20, required=False)
    replay_attempts = serializers.IntegerField(min_value=0, max_value=20, required=False)
    pause_after_failed_runs = serializers.IntegerField(
        min_value=0, max_value=1000, required=False, help_text="Pause after this many failed runs in a row (0: never)."
    )
    batch_size = serializers.IntegerField(min_value=1, max_value=1000, required=False)
    schedule_interval_minutes = serializers.IntegerField(
        min_value=1, max_value=525600, allow_null=True, required=False
    )
    field_mappings = FieldMappingSerializer(
        many=True, required=False, help_text="Given, it replaces every field mapping; omitted, they stay as they are."
    )

    class Meta:
        model = Mapping
        fields = [
            "id", "name", "source_connection", "source_object", "target_connection", "target_object", "direction",
            "match_keys", "write_mode", "create_if_missing", "conflict_policy", "error_strategy", "retry_schedule",
            "max_retries", "retry_policy", "automated_replay", "replay_attempts", "logging_level", "auto_fix",
            "default_phone_country", "filters", "batch_size", "schedule_type", "schedule_interval_minutes",
            "schedule_cron", "is_active", "paused_reason", "pause_after_failed_runs", "last_successful_sync_at",
            "created_at", "updated_at", "field_mappings",
        ]
        read_only_fields = ["paused_reason", "last_successful_sync_at", "created_at", "updated_at"]

    def to_internal_value(self, data):
        try:
            return super().to_internal_value(data)
        except serializers.ValidationError as exc:
            raise serializers.ValidationError(dict(_flat_errors(exc.detail))) from None


# One problem of a mapping's validation. Not named ProblemSerializer: its component would be "Problem", the name of
# the problem-JSON document every error answer is (config.api), and one would replace the other in the schema.
class MappingProblemSerializer(serializers.Serializer):
    field = serializers.CharField(read_only=True, help_text='Where, like "field_mappings[2].target_field".')
    code = serializers.CharField(read_only=True)
    message = serializers.CharField(read_only=True)


class MappingValidationSerializer(serializers.Serializer):
    valid = serializers.BooleanField(read_only=True)
    problems = MappingProblemSerializer(many=True, read_only=True)


class RunRequestSerializer(RejectUnknownFieldsMixin, serializers.Serializer):
    full = serializers.BooleanField(
        default=False, help_text="Read every record, not only those changed since the last successful sync."
    )


class QueuedRunSerializer(serializers.Serializer):
    id = serializers.UUIDField(source="code", read_only=True)
    status = serializers.ChoiceField(choices=RunStatus.choices, read_only=True)
    trigger = serializers.ChoiceField(choices=Trigger.choices, read_only=True)
    mapping = serializers.UUIDField(source="mapping.code", read_only=True)
    already_active = serializers.BooleanField(
        read_only=True, help_text="The mapping was already queued or running: this is that run, no new one."
    )


class TestSyncRequestSerializer(RejectUnknownFieldsMixin, serializers.Serializer):
    sample_size = serializers.IntegerField(min_value=1, max_value=100, default=10)
    write = serializers.BooleanField(default=False, help_text="Write the sample for real (the cursor never moves).")


class TestSyncResultSerializer(serializers.Serializer):
    id = serializers.UUIDField(source="code", read_only=True)
    status = serializers.ChoiceField(choices=RunStatus.choices, read_only=True)
    write = serializers.SerializerMethodField()
    counts = RunCountsSerializer(source="*", read_only=True)
    system_error = serializers.CharField(read_only=True)
    plan = serializers.SerializerMethodField(help_text="Per record, what a real run would do (empty with write).")

    def get_write(self, run) -> bool:
        return not run.is_test

    @extend_schema_field(PlanEntrySerializer(many=True))
    def get_plan(self, run):
        return PlanEntrySerializer(run.plan, many=True).data


class PauseRequestSerializer(RejectUnknownFieldsMixin, serializers.Serializer):
    reason = serializers.CharField(max_length=500, help_text="Shown to operators while the mapping is paused.")


class MappingBusyError(exceptions.APIException):
    status_code = status.HTTP_409_CONFLICT
    default_detail = "A run of this mapping is queued or running."
    default_code = "mapping_busy"


@extend_schema_view(
    list=extend_schema(summary="List mappings"),
    retrieve=extend_schema(summary="A mapping with its field mappings"),
    create=extend_schema(summary="Create a mapping with its field mappings"),
    update=extend_schema(summary="Replace a mapping's settings (and its field mappings, when given)"),
    partial_update=extend_schema(summary="Change some settings (field_mappings, when given, replaces the list)"),
    destroy=extend_schema(summary="Delete a mapping with its runs, errors and links (not while it runs)"),
)
class MappingViewSet(TenantViewSetMixin, viewsets.ModelViewSet):
    """Mappings of your organization: what is synced from which connection to which, and how failures are handled."""

    tenant_model = Mapping
    serializer_class = MappingSerializer
    filterset_class = MappingFilterSet
    filter_backends = [StrictFilterBackend, SearchFilter, StableOrderingFilter]
    search_fields = ["name"]
    ordering_fields = ["name", "created_at", "updated_at", "last_successful_sync_at"]
    ordering = ["name", "id"]

    @property
    def write_role(self):
        # Validation only reads: a viewer may ask for it.
        return Role.VIEWER if self.action == "validate" else Role.MEMBER

    def scope_queryset(self, queryset):
        return queryset.select_related("source_connection", "target_connection").prefetch_related("field_mappings")

    def create(self, request, *args, **kwargs):
        serializer = self.get_serializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        mapping = mapping_create(organization=request.org, **serializer.validated_data)
        return Response(self.get_serializer(mapping).data, status=status.HTTP_201_CREATED)

    def update(self, request, *args, **kwargs):
        serializer = self.get_serializer(self.get_object(), data=request.data, partial=kwargs.get("partial", False))
        serializer.is_valid(raise_exception=True)
        mapping_update(mapping=serializer.instance, **serializer.validated_data)
        return Response(self.get_serializer(self.get_object()).data)  # fetched again: the field mappings changed

    def destroy(self, request, *args, **kwargs):
        try:
            mapping_delete(mapping=self.get_object())
        except MappingBusy as exc:
            raise MappingBusyError(str(exc)) from None
        return Response(status=status.HTTP_204_NO_CONTENT)

    @extend_schema(summary="Check the mapping against both connections' live schemas", request=None,
                   responses={200: MappingValidationSerializer})
    @action(detail=True, methods=["post"])
    def validate(self, request, *args, **kwargs):
        problems = mapping_validate(self.get_object())
        return Response(MappingValidationSerializer({"valid": not problems, "problems": problems}).data)

    @extend_schema(summary="Run now", request=RunRequestSerializer, responses={202: QueuedRunSerializer},
                   parameters=[IDEMPOTENCY_HEADER])
    @action(detail=True, methods=["post"])
    @idempotent
    def run(self, request, *args, **kwargs):
        mapping = self.get_object()
        body = RunRequestSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        run, already_active = mapping_run_now(mapping=mapping, full=body.validated_data["full"])
        run.already_active = already_active
        return Response(QueuedRunSerializer(run).data, status=status.HTTP_202_ACCEPTED)

    @extend_schema(summary="Test sync: what a run of a sample would do, or write just that sample",
                   request=TestSyncRequestSerializer, responses={200: TestSyncResultSerializer})
    @action(detail=True, methods=["post"], url_path="test-sync")
    def test_sync(self, request, *args, **kwargs):
        mapping = self.get_object()
        body = TestSyncRequestSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        try:
            run = mapping_test_sync(mapping=mapping, **body.validated_data)
        except MappingBusy as exc:
            raise MappingBusyError(str(exc)) from None
        return Response(TestSyncResultSerializer(run).data)

    @extend_schema(summary="Pause: no scheduled runs until resumed", request=PauseRequestSerializer,
                   responses={200: MappingSerializer})
    @action(detail=True, methods=["post"])
    def pause(self, request, *args, **kwargs):
        mapping = self.get_object()
        body = PauseRequestSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        mapping_pause(mapping=mapping, reason=body.validated_data["reason"])
        return Response(self.get_serializer(mapping).data)

    @extend_schema(summary="Resume a paused mapping", request=None, responses={200: MappingSerializer})
    @action(detail=True, methods=["post"])
    def resume(self, request, *args, **kwargs):
        mapping = self.get_object()
        mapping_resume(mapping=mapping)
        return Response(self.get_serializer(mapping).data)


ROUTES = [("mappings", MappingViewSet, "mapping")]
URLS = []  # extra django.urls paths under /api/v1/
