"""REST API resources of the syncs app (registered in config.api_urls through ROUTES and URLS): runs, record errors,
error groups, bulk actions, record status and analytics."""

from django.urls import path

from syncs.api.analytics import AnalyticsView
from syncs.api.errors import BulkActionViewSet, ErrorGroupViewSet, RecordErrorViewSet
from syncs.api.records import RecordStatusViewSet
from syncs.api.runs import SyncRunViewSet

ROUTES = [  # (prefix, viewset, basename)
    ("runs", SyncRunViewSet, "run"),
    ("errors", RecordErrorViewSet, "error"),
    ("error-groups", ErrorGroupViewSet, "error-group"),
    ("bulk-actions", BulkActionViewSet, "bulk-action"),
    ("record-status", RecordStatusViewSet, "record-status"),
]
URLS = [  # extra django.urls paths under /api/v1/
    # Not "analytics": that is the browser page's name, and one name for two routes reverses to the wrong one.
    path("analytics/", AnalyticsView.as_view(), name="analytics-summary"),
]
