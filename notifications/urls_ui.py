"""Settings → Notifications in the browser UI, under /settings/notifications/ (notifications.ui)."""

from django.urls import path
from django.views.generic import RedirectView

from notifications import ui

app_name = "notifications"

urlpatterns = [
    path("", RedirectView.as_view(pattern_name="notifications:channels"), name="index"),
    path("channels/", ui.channel_list, name="channels"),
    path("channels/add/", ui.channel_add, name="channel_add"),
    path("channels/<uuid:code>/", ui.channel_detail, name="channel_detail"),
    path("channels/<uuid:code>/edit/", ui.channel_edit, name="channel_edit"),
    path("channels/<uuid:code>/delete/", ui.channel_delete_view, name="channel_delete"),
    path("channels/<uuid:code>/test/", ui.channel_test, name="channel_test"),
    path("channels/<uuid:code>/rotate-secret/", ui.channel_rotate, name="channel_rotate"),
    path("channels/<uuid:code>/enable/", ui.channel_enable_view, name="channel_enable"),
    path("rules/", ui.rule_list, name="rules"),
    path("rules/add/", ui.rule_add, name="rule_add"),
    path("rules/<uuid:code>/edit/", ui.rule_edit, name="rule_edit"),
    path("rules/<uuid:code>/enable/", ui.rule_enable, name="rule_enable"),
    path("rules/<uuid:code>/disable/", ui.rule_disable, name="rule_disable"),
    path("rules/<uuid:code>/delete/", ui.rule_delete_view, name="rule_delete"),
    path("alerts/", ui.alert_list, name="alerts"),
    path("alerts/<uuid:code>/", ui.alert_detail, name="alert_detail"),
    path("deliveries/", ui.delivery_list, name="deliveries"),
    path("deliveries/<uuid:code>/", ui.delivery_detail, name="delivery_detail"),
]
