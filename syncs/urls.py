from django.urls import path

from syncs import views
from syncs.views import errors, records, review, runs
from syncs.views.analytics import analytics
from syncs.views.bulk import bulk_action_detail

urlpatterns = [
    path("", views.home, name="home"),
    path("overview/runs-in-progress/", views.runs_in_progress, name="runs_in_progress"),
    path("runs/", runs.runs_list, name="runs"),
    path("runs/<uuid:code>/", runs.run_detail, name="run_detail"),
    path("runs/<uuid:code>/progress/", runs.run_progress, name="run_progress"),
    path("runs/<uuid:code>/errors/", runs.run_errors, name="run_errors"),
    path("runs/<uuid:code>/retry-failures/", runs.run_retry_failures, name="run_retry_failures"),
    path("runs/<uuid:code>/cancel/", runs.run_cancel, name="run_cancel"),
    path("errors/", errors.errors_list, name="errors"),
    path("errors/groups/", errors.error_groups_list, name="error_groups"),
    path("errors/groups/<str:fingerprint>/retry/", errors.error_group_retry_view, name="error_group_retry"),
    path("errors/groups/progress/", errors.error_groups_progress, name="error_groups_progress"),
    path("errors/groups/<str:fingerprint>/fix/<str:kind>/", errors.error_group_fix_view, name="error_group_fix"),
    path("errors/retry/", errors.errors_retry_view, name="errors_retry"),
    path("errors/ignore/", errors.errors_ignore_view, name="errors_ignore"),
    path("errors/bulk/<uuid:code>/", bulk_action_detail, name="bulk_action"),
    path("errors/<uuid:code>/", errors.error_detail, name="error_detail"),
    path("errors/<uuid:code>/retry/", errors.error_retry_view, name="error_retry"),
    path("errors/<uuid:code>/ignore/", errors.error_ignore_view, name="error_ignore"),
    path("errors/<uuid:code>/resolve/", errors.error_resolve_view, name="error_resolve"),
    path("errors/<uuid:code>/preview/", errors.error_preview, name="error_preview"),
    path("review/", review.review_queue_view, name="review_queue"),
    path("review/<uuid:code>/", review.review_error, name="review_error"),
    path("review/<uuid:code>/outcome/", review.review_error_outcome, name="review_error_outcome"),
    path("review/<uuid:code>/ignore/", review.review_error_ignore, name="review_error_ignore"),
    path("records/", records.record_status, name="record_status"),
    path("records/resync/", records.record_resync_view, name="record_resync"),
    path("records/resync-unsynced/", records.records_resync_unsynced_view, name="records_resync_unsynced"),
    path("analytics/", analytics, name="analytics"),
]
