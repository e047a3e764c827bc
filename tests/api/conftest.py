"""API test helpers: a client authenticated by an organization token."""

import pytest
from rest_framework.test import APIClient

from accounts.models import TokenRole
from accounts.services import api_token_create


@pytest.fixture
def make_token(org):
    def make(organization=None, role=TokenRole.ADMIN, name="test"):
        _token, plain = api_token_create(organization=organization or org, name=name, role=role)
        return plain

    return make


@pytest.fixture
def api(make_token):
    """An API client of `org` with an admin token."""
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {make_token()}")
    return client


@pytest.fixture
def other_api(make_token, other_org):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {make_token(other_org)}")
    return client
