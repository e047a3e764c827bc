"""The mapping pages of the browser UI, under /mappings/ (mappings.ui). "resume" also serves the overview's
button: it goes back to the page the button was on."""

from django.urls import path

from mappings import ui

app_name = "mappings"

urlpatterns = [
    path("", ui.mapping_list, name="list"),
    path("new/", ui.mapping_new, name="new"),
    path("preview/", ui.mapping_preview, name="preview"),
    path("<uuid:code>/", ui.mapping_detail, name="detail"),
    path("<uuid:code>/edit/", ui.mapping_edit, name="edit"),
    path("<uuid:code>/validate/", ui.mapping_validate_view, name="validate"),
    path("<uuid:code>/test-sync/", ui.mapping_test_sync_view, name="test_sync"),
    path("<uuid:code>/run/", ui.mapping_run_view, name="run"),
    path("<uuid:code>/pause/", ui.mapping_pause_view, name="pause"),
    path("<uuid:code>/resume/", ui.mapping_resume_view, name="resume"),
    path("<uuid:code>/delete/", ui.mapping_delete_view, name="delete"),
]
