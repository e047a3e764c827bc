"""Schemathesis over every operation of the OpenAPI schema, in-process and authenticated: no server error, no
answer that breaks the schema."""

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from config.wsgi import application
from tests.api.world import build_world

# Loaded from the running application itself, as a client would; the schema view needs no database.
schema = schemathesis.openapi.from_wsgi("/api/v1/schema/?format=json", application)
pytestmark = pytest.mark.django_db
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_headers_conformance,
          response_schema_conformance]


@pytest.fixture(autouse=True)
def _keep_the_test_connection_open():
    # A real WSGI request closes the database connection when it finishes; inside a test transaction that
    # would close the test's own connection. Django's test client does the same as this.
    from django.core import signals
    from django.db import close_old_connections

    signals.request_started.disconnect(close_old_connections)
    signals.request_finished.disconnect(close_old_connections)
    yield
    signals.request_started.connect(close_old_connections)
    signals.request_finished.connect(close_old_connections)


@pytest.fixture
def world_token(db, org, other_org, make_token, settings):
    # Schemathesis sends many requests with one token: no throttling here (429 is tested on its own).
    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "DEFAULT_THROTTLE_CLASSES": []}
    build_world(org)
    build_world(other_org)
    return make_token(org)


@schema.parametrize()
@settings(
    max_examples=12,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.filter_too_much],
)
def test_every_operation_answers_within_its_schema(case, world_token):
    # The bar: no server error, and every answer (status, content type, headers, body) as documented.
    # Whether an odd-but-harmless input is refused is left to the resources' own tests.
    case.call_and_validate(headers={"Authorization": f"Bearer {world_token}"}, checks=CHECKS)
