"""The connection pages of the browser UI, under /connections/ (integrations.ui)."""

from django.urls import path

from integrations import ui

app_name = "connections"

urlpatterns = [
    path("", ui.connection_list, name="list"),
    path("add/", ui.connection_add, name="add"),
    path("<uuid:code>/", ui.connection_detail, name="detail"),
    path("<uuid:code>/test/", ui.connection_test, name="test"),
    path("<uuid:code>/reconnect/", ui.connection_reconnect, name="reconnect"),
    path("<uuid:code>/refresh-schema/", ui.connection_refresh_schema, name="refresh_schema"),
    path("<uuid:code>/edit/", ui.connection_edit, name="edit"),
    path("<uuid:code>/delete/", ui.connection_delete_view, name="delete"),
]
