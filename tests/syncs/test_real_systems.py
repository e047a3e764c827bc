"""End to end against real servers: a PostgreSQL table → the reference connector service (HTTP on loopback) →
another PostgreSQL table, through the engine, with failures of several kinds along the way.

What a customer runs the day they connect their own systems: real SQL, real HTTP, signed requests, a timeout
after the service stored a batch (which must not create anything twice), and record errors the operator can
act on.
"""


import pytest

from connector_service.reference import Fault, serve
from integrations.models import Connection
from mappings.models import FieldMapping, Mapping
from syncs.models import ErrorLevel, LinkStatus, RecordError, RecordLink, RunStatus
from tests.syncs.helpers import admin, run_mapping, table

pytestmark = pytest.mark.django_db

SECRET = "whsec_" + "cmVzeW5jLWVuZC10by1lbmQtdGVzdC1zZWNyZXQ="  # base64 of 30 bytes

SERVICE_OBJECTS = {"contacts": {"label": "Contacts", "fields": [
    {"name": "email", "type": "email", "required": True, "unique": True},
    {"name": "first_name", "type": "string", "maxLength": 40},
    {"name": "last_name", "type": "string", "required": True, "maxLength": 40},
    {"name": "phone", "type": "phone"},
]}}


@pytest.fixture
def service():
    server = serve(port=0, secret=SECRET, objects=SERVICE_OBJECTS)
    yield server
    server.stop()


@pytest.fixture(autouse=True)
def _loopback(settings):
    settings.RESYNC_ALLOW_PRIVATE_URLS = True  # the servers are on this machine
    settings.RESYNC_HTTP_TIMEOUT = 1  # the service's slow answer outlasts it


def mapping(org, name, source, source_object, target, target_object, fields, **options):
    made = Mapping.objects.create(
        organization=org, name=name, source_connection=source, source_object=source_object,
        target_connection=target, target_object=target_object,
        match_keys=[{"source": "email", "target": "email"}], **options,
    )
    for position, (field, transforms) in enumerate(fields.items()):
        FieldMapping.objects.create(organization=org, mapping=made, source_field=field, target_field=field,
                                    transforms=transforms, position=position)
    return made


def test_a_table_synced_through_a_connector_service_into_another_table(org, database, service):
    with admin(database) as db:
        rows = [(f"person{n}@example.com", f"First{n}", f"Last{n}", "+14155550100") for n in range(1, 21)]
        rows += [
            ("broken-phone@example.com", "Broken", "Phone", "call me"),  # mapping: the transform fails
            ("no-name@example.com", "No", "", "+14155550100"),  # validation: the service requires a last name
            ("PERSON1@example.com", "Twin", "Last1", "+14155550100"),  # duplicate: the same person signed up twice
            ("long-name@example.com", "Long", "Wolfeschlegelsteinhausen", "+14155550100"),  # too long for crm
        ]
        with db.cursor() as cursor:
            cursor.executemany("INSERT INTO shop_customers (email, first_name, last_name, phone) "
                               "VALUES (%s, %s, %s, %s)", rows)
    shop = table(org, database, "Shop database", id_column="id", updated_at_column="updated_at")
    crm = table(org, database, "CRM database", key_column="email")
    hub = Connection(organization=org, name="Connector service", provider="connector_service",
                     config={"url": service.url})
    hub.credentials = {"signing_secret": SECRET}
    hub.save()
    phone = [{"name": "trim"}, {"name": "phone_e164"}]
    outbound = mapping(org, "Shop → service", shop, "shop_customers", hub, "contacts",
                       {"email": [{"name": "trim"}, {"name": "lowercase"}], "first_name": [], "last_name": [],
                        "phone": phone},
                       batch_size=10)
    inbound = mapping(org, "Service → CRM", hub, "contacts", crm, "crm_contacts",
                      {"email": [], "first_name": [], "last_name": [], "phone": []}, batch_size=10)
    # The service stores the first batch, then answers after the client gave up: the records exist, the
    # answer is lost.
    service.service.faults = [Fault("slow", seconds=2, times=1)]

    first = run_mapping(outbound)

    stored = service.service.records("contacts")
    emails = [record["data"]["email"] for record in stored]
    assert len(emails) == len(set(email.lower() for email in emails)) == 20 + 1  # no duplicate; long-name too
    assert first.status == RunStatus.PARTIALLY_FAILED
    categories = set(RecordError.objects.filter(run=first, level=ErrorLevel.RECORD)
                     .values_list("category", flat=True))
    assert {"mapping", "validation", "duplicate"} <= categories
    links = RecordLink.objects.filter(mapping=outbound, status=LinkStatus.SYNCED)
    assert links.count() == 21 and all(link.target_record_id for link in links)

    # Back into another table: one statement per batch, and a value the table cannot hold is that record's
    # own error, classified from PostgreSQL's answer.
    back = run_mapping(inbound)

    with admin(database) as db:
        copied = dict(db.execute("SELECT email, last_name FROM crm_contacts").fetchall())
    assert len(copied) == 20
    assert "long-name@example.com" not in copied
    (too_long,) = RecordError.objects.filter(run=back, level=ErrorLevel.RECORD)
    assert (too_long.category, too_long.error_code, too_long.field) == ("validation", "too_long", "last_name")
    every = set(RecordError.objects.filter(level=ErrorLevel.RECORD).values_list("category", flat=True))
    assert len(every) >= 3

    # A timeout on a read of the service (it is down for one call) is a batch error of its own category; the
    # retry of that page loads it, and nothing is created twice.
    service.service.faults = [Fault("unavailable", path="/v1/data", method="GET", times=1)]
    with admin(database) as db:
        db.execute("UPDATE shop_customers SET first_name = 'Renamed', updated_at = now() WHERE email = %s",
                   ("person2@example.com",))
    again = run_mapping(outbound, options={"full": True})
    assert again.created == 0
    down = run_mapping(inbound, options={"full": True})
    assert down.status in (RunStatus.FAILED, RunStatus.PARTIALLY_FAILED)
    assert RecordError.objects.filter(run=down, level=ErrorLevel.BATCH, category="connection").exists()
    categories = set(RecordError.objects.values_list("category", flat=True))
    assert {"mapping", "validation", "duplicate", "connection"} <= categories
