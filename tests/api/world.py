"""One organization's full world for API-wide tests: connections, a mapping with runs, errors of every level,
links, a token, a bulk action waiting for a worker, a webhook endpoint and a processed event."""

import json
import time

from accounts.services import api_token_create
from integrations.connectors.base import webhook_signature
from integrations.connectors.sandbox import seed_records
from integrations.models import Connection, WebhookEvent
from integrations.webhooks import webhook_endpoint_create, webhook_event_process, webhook_receive
from mappings.models import FieldMapping, Mapping
from syncs.bulk import bulk_action_request
from syncs.engine import sync_run_execute
from syncs.services import sync_run_queue
from tests.syncs.helpers import person


def build_world(organization):
    def connection(name, **config):
        conn = Connection(organization=organization, name=name, provider="sandbox", config=config)
        conn.credentials = {"api_key": f"sk_world_{organization.slug}"}
        conn.save()
        return conn

    source = connection("World shop", faults={"fail_pages": [3]})
    target = connection("World CRM", faults={"operations": ["write"], "rate_limit_every": 4, "retry_after": 5})
    mapping = Mapping.objects.create(
        organization=organization, name="World contacts", source_connection=source, source_object="contacts",
        target_connection=target, target_object="contacts", match_keys=[{"source": "email", "target": "email"}],
        error_strategy="retry", batch_size=3,
    )
    for position, field in enumerate(("email", "first_name", "last_name", "phone")):
        FieldMapping.objects.create(organization=organization, mapping=mapping, source_field=field,
                                    target_field=field, transforms=[{"name": "trim"}], position=position)
    seed_records(source, "contacts", [person(1), person(2, last_name=""), person(3, email="bad"),
                                      *[person(n) for n in range(4, 12)]])
    run = sync_run_queue(mapping=mapping, enqueue=False)
    sync_run_execute(run_id=run.pk)
    api_token_create(organization=organization, name="a token", role="admin")
    bulk_action_request(organization=organization, kind="resolve", selection={"filter": {"category": "validation"}},
                        options={"note": "Fixed at the source"})
    endpoint, secret = webhook_endpoint_create(connection=source, name="World hook")
    raw = json.dumps({"type": "records.changed", "object": "contacts", "ids": ["ct_world"]}).encode()
    timestamp = str(int(time.time()))
    headers = {"webhook-id": f"msg_{organization.slug}", "webhook-timestamp": timestamp,
               "webhook-signature": webhook_signature(secret, webhook_id=f"msg_{organization.slug}",
                                                      timestamp=timestamp, raw_body=raw)}
    _status, body = webhook_receive(code=endpoint.code, headers=headers, raw_body=raw)
    webhook_event_process(event_pk=WebhookEvent.objects.get(code=body["event"]).pk)
    build_notifications(organization, mapping)
    return mapping


def build_notifications(organization, mapping):
    """An email channel, a rule of the mapping and the alert and delivery a failed run of it opens."""
    from notifications.alerts import notify_run_finished
    from notifications.services import channel_create, rule_create
    from syncs.models import SyncRun

    channel, _secret = channel_create(organization=organization, name="World alerts", kind="email",
                                      recipients=[f"ops@{organization.slug}.example"])
    rule_create(organization=organization, name="World errors", condition="every_error", channels=[channel],
                scope="mapping", mapping=mapping)
    notify_run_finished(SyncRun.objects.filter(mapping=mapping, failed__gt=0).order_by("pk").first())
