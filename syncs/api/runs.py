"""Runs: the sync events of the organization's mappings, their batches and retry chains; retry failures, cancel."""

from django.db.models import Count, Prefetch
from drf_spectacular.utils import extend_schema
from rest_framework import mixins, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.response import Response

from accounts.api import TenantViewSetMixin
from config.api import RecentFirstCursorPagination, RunCountsSerializer
from syncs.api.common import ForceSerializer, MappingRefSerializer, refusals_as_conflicts
from syncs.chains import run_and_descendants, run_recovery_summary, sync_run_retry_failures
from syncs.filtersets import SyncRunFilterSet
from syncs.models import SyncBatch, SyncRun
from syncs.services import sync_run_cancel, sync_run_summary


class SyncRunSerializer(serializers.ModelSerializer):
    id = serializers.UUIDField(source="code", read_only=True)
    mapping = MappingRefSerializer(read_only=True)
    parent = serializers.SlugRelatedField(slug_field="code", read_only=True, allow_null=True,
                                          help_text="The run this one retries, in a retry chain.")
    root = serializers.SlugRelatedField(slug_field="code", read_only=True, allow_null=True,
                                        help_text="The first run of its chain.")
    counts = RunCountsSerializer(source="*", read_only=True)

    class Meta:
        model = SyncRun
        fields = ["id", "mapping", "trigger", "status", "is_test", "parent", "root", "counts", "system_error",
                  "cursor_from", "cursor_to", "queued_at", "started_at", "finished_at", "heartbeat_at"]
        read_only_fields = fields


class SyncBatchSerializer(serializers.ModelSerializer):
    class Meta:
        model = SyncBatch
        fields = ["sequence", "direction", "page_token", "status", "record_count", "error", "attempts",
                  "started_at", "finished_at"]
        read_only_fields = fields


class RunBriefSerializer(serializers.ModelSerializer):
    id = serializers.UUIDField(source="code", read_only=True)

    class Meta:
        model = SyncRun
        fields = ["id", "trigger", "status", "failed", "queued_at", "finished_at"]
        read_only_fields = fields


class RunDescendantsSerializer(serializers.Serializer):
    count = serializers.IntegerField(read_only=True)
    by_status = serializers.DictField(child=serializers.IntegerField(), read_only=True)


class RunRecoverySerializer(serializers.Serializer):
    open_failures = serializers.IntegerField(
        read_only=True, help_text="Unresolved errors that keep this run from being recovered; list them with the "
                                  "errors list's blocking filter.")
    by_status = serializers.DictField(child=serializers.IntegerField(), read_only=True)
    by_category = serializers.DictField(child=serializers.IntegerField(), read_only=True)
    retries_in_flight = serializers.IntegerField(read_only=True, help_text="Retries of it queued or running.")


class SyncRunDetailSerializer(SyncRunSerializer):
    batches = SyncBatchSerializer(many=True, read_only=True)
    children = RunBriefSerializer(many=True, read_only=True, help_text="The retries of this run.")
    descendants = RunDescendantsSerializer(source="descendants_summary", read_only=True,
                                           help_text="Every retry below this run in its chain, by status.")
    errors_by_category = serializers.DictField(
        child=serializers.IntegerField(), read_only=True,
        help_text="System, batch and record errors of this run by category.",
    )

    recovery = RunRecoverySerializer(source="recovery_summary", read_only=True,
                                     help_text="Why the run is not (yet) recovered: what of it is still open.")

    class Meta(SyncRunSerializer.Meta):
        fields = [*SyncRunSerializer.Meta.fields, "batches", "children", "descendants", "errors_by_category",
                  "recovery"]
        read_only_fields = fields


class RunCursorPagination(RecentFirstCursorPagination):
    ordering = ("-queued_at", "-id")


class SyncRunViewSet(TenantViewSetMixin, mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    """Runs of your mappings, newest first: counts, timings, batches and retry chains."""

    tenant_model = SyncRun
    serializer_class = SyncRunSerializer
    filterset_class = SyncRunFilterSet
    pagination_class = RunCursorPagination
    ordering_fields = ["queued_at"]
    ordering = ["-queued_at", "-id"]

    def scope_queryset(self, queryset):
        queryset = queryset.select_related("mapping", "parent", "root")
        if self.action == "retrieve":
            queryset = queryset.prefetch_related(
                Prefetch("batches", queryset=SyncBatch.objects.order_by("direction", "sequence")),
                Prefetch("children", queryset=SyncRun.objects.order_by("queued_at", "pk")),
            )
        return queryset

    def get_serializer_class(self):
        return SyncRunDetailSerializer if self.action == "retrieve" else SyncRunSerializer

    def retrieve(self, request, *args, **kwargs):
        run = self.get_object()
        below = run_and_descendants(run) - {run.pk}
        by_status = dict(SyncRun.objects.for_org(request.org).filter(pk__in=below).values_list("status")
                         .annotate(n=Count("pk")).order_by("status"))
        run.descendants_summary = {"count": len(below), "by_status": by_status}
        run.errors_by_category = sync_run_summary(run)["errors_by_category"]
        run.recovery_summary = run_recovery_summary(run)
        return Response(SyncRunDetailSerializer(run).data)

    @extend_schema(summary="Retry the failures of a run", request=ForceSerializer,
                   responses={202: SyncRunSerializer})
    @action(detail=True, methods=["post"], url_path="retry-failures")
    def retry_failures(self, request, *args, **kwargs):
        """Queue a child run that re-fetches the failed batches and replays the failing records of this run
        (and of the retries that followed it)."""
        run = self.get_object()
        options = ForceSerializer(data=request.data)
        options.is_valid(raise_exception=True)
        with refusals_as_conflicts():
            child = sync_run_retry_failures(run=run, force=options.validated_data["force"])
        child = self.get_queryset().get(pk=child.pk)
        return Response(SyncRunSerializer(child).data, status=status.HTTP_202_ACCEPTED)

    @extend_schema(summary="Cancel a queued run", request=None, responses={200: SyncRunSerializer})
    @action(detail=True, methods=["post"])
    def cancel(self, request, *args, **kwargs):
        """A queued run is canceled and the errors it was to retry go back to their queue. A run already
        running or finished answers 409."""
        run = self.get_object()
        with refusals_as_conflicts():
            run = sync_run_cancel(run=run)
        return Response(SyncRunSerializer(run).data)

