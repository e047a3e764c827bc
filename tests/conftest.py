"""The test cast: two organizations that must never see each other's rows.

acme: alice (owner), bob (member). globex: charlie (owner), who "should have no access to Alice's stuff".
"""

import pytest
from django.contrib.auth import get_user_model

from accounts.models import Membership, Organization, Role


@pytest.fixture(autouse=True)
def _tasks_run_inline(monkeypatch):
    # async_task runs the task in-process; tests that need a real worker start qcluster themselves.
    from django_q.conf import Conf

    monkeypatch.setattr(Conf, "SYNC", True)


@pytest.fixture(autouse=True)
def _sandbox_in_process(settings):
    # The sandbox API's views answer in this process (no web server runs during tests); its answers still go
    # through integrations.connectors.http as any vendor's do.
    settings.RESYNC_SANDBOX_IN_PROCESS = True
    settings.RESYNC_SANDBOX_URL = "http://sandbox.resync.test"
    # One call, one answer: a test about in-request retries sets its own delays.
    settings.RESYNC_HTTP_RETRY_DELAYS = []


@pytest.fixture
def org(db):
    return Organization.objects.create(name="Acme", slug="acme")


@pytest.fixture
def other_org(db):
    return Organization.objects.create(name="Globex", slug="globex")


@pytest.fixture
def alice(org):
    user = get_user_model().objects.create_user("alice", "alice@example.org", "alice-password")
    Membership.objects.create(user=user, organization=org, role=Role.OWNER)
    return user


@pytest.fixture
def bob(org):
    user = get_user_model().objects.create_user("bob", "bob@example.org", "bob-password")
    Membership.objects.create(user=user, organization=org, role=Role.MEMBER)
    return user


@pytest.fixture
def charlie(other_org):
    user = get_user_model().objects.create_user("charlie", "charlie@example.org", "charlie-password")
    Membership.objects.create(user=user, organization=other_org, role=Role.OWNER)
    return user


@pytest.fixture
def make_connection(org):
    """A sandbox connection of `org` (or another organization) with an API key and optional faults."""
    from integrations.models import Connection

    def make(name="Shop", *, organization=None, faults=None, api_key="sk_test_canary_4f9a", **config):
        if faults is not None:
            config["faults"] = faults
        connection = Connection(organization=organization or org, name=name, provider="sandbox", config=config)
        connection.credentials = {"api_key": api_key}
        connection.save()
        return connection

    return make


CONTACT_FIELDS = ("email", "first_name", "last_name", "phone")


@pytest.fixture
def make_mapping(org, make_connection):
    """A contacts → contacts mapping between two new sandbox connections, matched on email."""
    from mappings.models import FieldMapping, Mapping

    def make(*, source=None, target=None, fields=CONTACT_FIELDS, transforms=None, organization=None, **options):
        organization = organization or org
        source = source or make_connection(f"Source {Mapping.objects.count()}", organization=organization)
        target = target or make_connection(f"Target {Mapping.objects.count()}", organization=organization)
        options.setdefault("match_keys", [{"source": "email", "target": "email"}])
        mapping = Mapping.objects.create(
            organization=organization, name=f"Contacts {Mapping.objects.count()}",
            source_connection=source, source_object="contacts", target_connection=target, target_object="contacts",
            **options,
        )
        transforms = transforms or {}
        for position, field in enumerate(fields):
            FieldMapping.objects.create(
                organization=organization, mapping=mapping, source_field=field, target_field=field,
                transforms=transforms.get(field, [{"name": "trim"}]), position=position,
            )
        return mapping

    return make


@pytest.fixture
def execute_queued(django_capture_on_commit_callbacks):
    """Run what services queue on commit (tasks run inline in tests), including what those runs queue."""
    return lambda: django_capture_on_commit_callbacks(execute=True)


@pytest.fixture
def failing_target(make_connection):
    """A target whose every write answers 503."""
    return make_connection("Down CRM", faults={"operations": ["write"], "failure_rate": 1.0, "failure_kind": "503"})
