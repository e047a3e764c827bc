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
