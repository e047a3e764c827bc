"""Analytics: every figure of Syncs → Analytics over a window, as one answer."""

from datetime import UTC, datetime, timedelta

from drf_spectacular.utils import extend_schema
from rest_framework import generics, serializers
from rest_framework.response import Response

from accounts.api import TenantViewSetMixin
from syncs.analytics import analytics_summary
from syncs.api.common import ConnectionRefSerializer, with_connections
from syncs.models import RecordError

WINDOWS = {"24h": timedelta(hours=24), "7d": timedelta(days=7), "30d": timedelta(days=30)}
# The hourly trend has a bucket per hour of the window: a year is the most one answer carries.
LONGEST_WINDOW = timedelta(days=366)
EARLIEST = datetime(2000, 1, 1, tzinfo=UTC)


class AnalyticsQuerySerializer(serializers.Serializer):
    window = serializers.ChoiceField(choices=list(WINDOWS), required=False,
                                     help_text="The window ending at `until` (or now); instead of `since`.")
    since = serializers.DateTimeField(required=False, help_text="Start of the window, inclusive (default: 7 days "
                                                                "before `until`).")
    until = serializers.DateTimeField(required=False, help_text="End of the window, exclusive (default: now).")

    def validate(self, attrs):
        if "window" in attrs and "since" in attrs:
            raise serializers.ValidationError({"window": "Give either window or since, not both."})
        for name in ("since", "until"):
            if name in attrs and attrs[name] < EARLIEST:
                raise serializers.ValidationError({name: f"Must be after {EARLIEST:%Y-%m-%d}."})
        return attrs


class ErrorRateSerializer(serializers.Serializer):
    processed = serializers.IntegerField()
    failed = serializers.IntegerField()
    rate = serializers.FloatField(allow_null=True)


class CategoryCountSerializer(serializers.Serializer):
    category = serializers.CharField()
    count = serializers.IntegerField()


class CodeCountSerializer(CategoryCountSerializer):
    code = serializers.CharField(source="error_code")


class ResolutionTimeSerializer(serializers.Serializer):
    count = serializers.IntegerField()
    median_seconds = serializers.FloatField(allow_null=True)
    p90_seconds = serializers.FloatField(allow_null=True)


class RetrySuccessSerializer(serializers.Serializer):
    retried = serializers.IntegerField()
    succeeded = serializers.IntegerField()
    rate = serializers.FloatField(allow_null=True)


class SuccessRateSerializer(serializers.Serializer):
    succeeded = serializers.IntegerField()
    failed = serializers.IntegerField()
    rate = serializers.FloatField(allow_null=True)


class TargetSuccessSerializer(SuccessRateSerializer):
    connection = ConnectionRefSerializer()


class SuccessRatePerTargetSerializer(serializers.Serializer):
    targets = TargetSuccessSerializer(many=True)
    overall = SuccessRateSerializer()


class UnsyncedSerializer(serializers.Serializer):
    connection = ConnectionRefSerializer()
    synced = serializers.IntegerField()
    failed = serializers.IntegerField()
    unsynced = serializers.IntegerField()


class TrendSerializer(serializers.Serializer):
    hour = serializers.DateTimeField()
    count = serializers.IntegerField()


class AnalyticsSerializer(serializers.Serializer):
    since = serializers.DateTimeField()
    until = serializers.DateTimeField()
    error_rate = ErrorRateSerializer(help_text="Failed records as a share of the records primary runs processed.")
    errors_by_category = CategoryCountSerializer(many=True)
    errors_by_code = CodeCountSerializer(many=True)
    resolution_time = ResolutionTimeSerializer(help_text="From first failure to resolution, of errors resolved in "
                                                         "the window.")
    retry_success = RetrySuccessSerializer()
    success_rate_per_target = SuccessRatePerTargetSerializer(help_text="Over the 24 hours before `until`.")
    unsynced_per_target = UnsyncedSerializer(many=True, help_text="As the records stand now.")
    error_trend = TrendSerializer(many=True, help_text="Record errors per UTC hour, oldest first.")


class AnalyticsView(TenantViewSetMixin, generics.GenericAPIView):
    """Error analytics of your organization over a window."""

    tenant_model = RecordError
    serializer_class = AnalyticsSerializer
    pagination_class = None
    filter_backends = []

    @extend_schema(summary="Error analytics", parameters=[AnalyticsQuerySerializer],
                   responses={200: AnalyticsSerializer})
    def get(self, request, *args, **kwargs):
        query = AnalyticsQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        until = query.validated_data.get("until") or datetime.now(UTC)
        since = query.validated_data.get("since")
        if since is None:
            since = until - WINDOWS[query.validated_data.get("window", "7d")]
        if since >= until:
            raise serializers.ValidationError({"since": "Must be before until."})
        if until - since > LONGEST_WINDOW:
            raise serializers.ValidationError({"since": "The window may be at most 366 days long."})
        summary = analytics_summary(organization=request.org, since=since, until=until)
        per_target = summary["success_rate_per_target"]
        summary["success_rate_per_target"] = {
            **per_target, "targets": with_connections(per_target["targets"], organization=request.org),
        }
        summary["unsynced_per_target"] = with_connections(summary["unsynced_per_target"], organization=request.org)
        return Response(AnalyticsSerializer({**summary, "since": since, "until": until}).data)
