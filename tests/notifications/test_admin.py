"""The admin shows channels, rules, alerts and deliveries with their attempts, read-only, and never a secret."""

import pytest
import responses
from django.urls import reverse

from notifications.models import Alert, Channel, ChannelKind, Condition, Delivery, DeliveryStatus, Rule
from notifications.services import channel_create, rule_create
from tests.notifications.conftest import SLACK_URL, WEBHOOK_URL

pytestmark = pytest.mark.django_db


@responses.activate
def test_every_notification_page_of_the_admin_opens_without_showing_a_secret(admin_client, org, make_mapping,
                                                                            finish_run):
    responses.post(SLACK_URL, status=500, body="no_service")
    responses.post(WEBHOOK_URL, status=200)
    slack, _ = channel_create(organization=org, name="#ops", kind=ChannelKind.SLACK, url=SLACK_URL)
    hook, secret = channel_create(organization=org, name="Hook", kind=ChannelKind.WEBHOOK, url=WEBHOOK_URL)
    rule = rule_create(organization=org, name="Errors", condition=Condition.EVERY_ERROR, channels=[slack, hook])
    finish_run(make_mapping(), errors=3)
    alert = Alert.objects.get()
    failed = Delivery.objects.get(channel=slack)
    assert failed.status == DeliveryStatus.RETRYING

    pages = []
    for model, obj in ((Channel, slack), (Channel, hook), (Rule, rule), (Alert, alert), (Delivery, failed)):
        meta = model._meta
        for url in (reverse(f"admin:{meta.app_label}_{meta.model_name}_changelist"),
                    reverse(f"admin:{meta.app_label}_{meta.model_name}_change", args=[obj.pk])):
            answer = admin_client.get(url)
            assert answer.status_code == 200, url
            pages.append(answer.content.decode())
            assert admin_client.get(reverse(f"admin:{meta.app_label}_{meta.model_name}_add")).status_code == 403
    text = "\n".join(pages)
    assert "HTTP 500: no_service" in text  # the delivery log: the failed attempt and what came back
    for value in (SLACK_URL, "slacktokenCanary", secret, secret.removeprefix("whsec_")):
        assert value not in text


def test_the_admin_sends_a_test_message_through_the_service(admin_client, org, django_capture_on_commit_callbacks):
    channel, _ = channel_create(organization=org, name="Team", kind=ChannelKind.EMAIL, recipients=["a@acme.example"])
    with django_capture_on_commit_callbacks(execute=True):
        admin_client.post(reverse("admin:notifications_channel_changelist"),
                          {"action": "send_test", "_selected_action": [channel.pk]})
    delivery = Delivery.objects.get()
    assert (delivery.event, delivery.status) == ("test", DeliveryStatus.DELIVERED)
