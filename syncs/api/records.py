"""Record status: every source record × target with its sync status, the counts per target, and re-syncs."""

from drf_spectacular.utils import extend_schema
from rest_framework import mixins, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.response import Response

from accounts.api import TenantRelatedField, TenantViewSetMixin
from config.api import RejectUnknownFieldsMixin
from integrations.models import Connection
from mappings.models import Mapping
from syncs.api.common import ConnectionRefSerializer, MappingRefSerializer, with_connections
from syncs.api.runs import SyncRunSerializer
from syncs.filtersets import RecordStatusFilterSet
from syncs.models import RecordLink, SyncRun
from syncs.record_status import record_resync, record_sync_status, records_resync_unsynced, sync_status_counts

MAX_RECORD_IDS = 1000


class LastErrorSerializer(serializers.Serializer):
    id = serializers.UUIDField(source="code", read_only=True)
    message = serializers.CharField(read_only=True)


class RecordStatusSerializer(serializers.ModelSerializer):
    mapping = MappingRefSerializer(read_only=True)
    target_connection = ConnectionRefSerializer(source="mapping.target_connection", read_only=True)
    last_error = LastErrorSerializer(read_only=True, allow_null=True)

    class Meta:
        model = RecordLink
        fields = ["source_record_id", "mapping", "target_connection", "status", "target_record_id",
                  "last_synced_at", "last_error"]
        read_only_fields = fields


class TargetCountsSerializer(serializers.Serializer):
    connection = ConnectionRefSerializer(read_only=True)
    synced = serializers.IntegerField(read_only=True)
    unsynced = serializers.IntegerField(read_only=True, help_text="Failed or pending.")
    failed = serializers.IntegerField(read_only=True)


class ResyncSerializer(RejectUnknownFieldsMixin, serializers.Serializer):
    mapping = TenantRelatedField(Mapping, help_text="The mapping's id.")
    source_record_ids = serializers.ListField(child=serializers.CharField(max_length=255), allow_empty=False,
                                              max_length=MAX_RECORD_IDS)
    force = serializers.BooleanField(default=False,
                                     help_text="Overwrite a target record that changed since the last sync.")


class ResyncUnsyncedSerializer(RejectUnknownFieldsMixin, serializers.Serializer):
    mapping = TenantRelatedField(Mapping, required=False, help_text="Only this mapping's records.")
    target_connection = TenantRelatedField(Connection, required=False, help_text="Only records of this target.")


class ResyncRunsSerializer(serializers.Serializer):
    runs = SyncRunSerializer(many=True, read_only=True, help_text="One re-sync run per mapping.")


class RecordStatusViewSet(TenantViewSetMixin, mixins.ListModelMixin, viewsets.GenericViewSet):
    """Each source record of each mapping, with its status in the mapping's target."""

    tenant_model = RecordLink
    serializer_class = RecordStatusSerializer
    filterset_class = RecordStatusFilterSet
    ordering_fields = ["source_record_id", "status", "last_synced_at"]

    def scope_queryset(self, queryset):
        return record_sync_status(organization=self.request.org) & queryset

    @extend_schema(summary="Synced, unsynced and failed records per target",
                   responses=TargetCountsSerializer(many=True))
    @action(detail=False, methods=["get"], pagination_class=None, filter_backends=[])
    def counts(self, request, *args, **kwargs):
        rows = with_connections(sync_status_counts(organization=request.org), organization=request.org)
        return Response(TargetCountsSerializer(rows, many=True).data)

    @extend_schema(summary="Re-sync records", request=ResyncSerializer, responses={202: SyncRunSerializer})
    @action(detail=False, methods=["post"], pagination_class=None, filter_backends=[])
    def resync(self, request, *args, **kwargs):
        """Sync these source records of a mapping again now, read fresh from the source. If the mapping has a run
        under way, this one starts when it finishes."""
        body = ResyncSerializer(data=request.data, context=self.get_serializer_context())
        body.is_valid(raise_exception=True)
        run = record_resync(**body.validated_data)
        run = SyncRun.objects.for_org(request.org).select_related("mapping", "parent", "root").get(pk=run.pk)
        return Response(SyncRunSerializer(run).data, status=status.HTTP_202_ACCEPTED)

    @extend_schema(summary="Re-sync every unsynced record", request=ResyncUnsyncedSerializer,
                   responses={202: ResyncRunsSerializer})
    @action(detail=False, methods=["post"], url_path="resync-unsynced", pagination_class=None, filter_backends=[])
    def resync_unsynced(self, request, *args, **kwargs):
        """Re-sync every failed or pending record (of one mapping or one target, or all), one run per mapping."""
        body = ResyncUnsyncedSerializer(data=request.data, context=self.get_serializer_context())
        body.is_valid(raise_exception=True)
        runs = records_resync_unsynced(organization=request.org, **body.validated_data)
        runs = (SyncRun.objects.for_org(request.org).filter(pk__in=[run.pk for run in runs])
                .select_related("mapping", "parent", "root"))
        answer = {"runs": list(runs.order_by("pk"))}
        return Response(ResyncRunsSerializer(answer).data, status=status.HTTP_202_ACCEPTED)
