"""Schemathesis over every operation of the OpenAPI schema, in-process and authenticated, with every check it has:
no server error, every answer as documented (status, content type, headers, body), and the schema and the server
agree on what is valid: data the schema allows is accepted (positive_data_acceptance), data it forbids is refused
(negative_data_rejection: wrong types, unknown body fields, empty id lists, malformed paging parameters).

The normal suite runs a few examples per operation; `pytest -m slow` (make test-faults, CI) runs many more."""

import re

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import CHECKS, load_all_checks, positive_data_acceptance

from config.wsgi import application
from tests.api.world import build_world

# Loaded from the running application itself, as a client would; the schema view needs no database.
schema = schemathesis.openapi.from_wsgi("/api/v1/schema/?format=json", application)
pytestmark = pytest.mark.django_db

# Rules of valid data that need the database or relate two values, which a JSON schema cannot say: a request the
# schema allows may still be refused (400) for these, and only for these, fields. Anything else refused is a
# disagreement to fix in the schema or in the server.
BEYOND_THE_SCHEMA = {
    # A reference must name an object of the caller's organization (unknown and foreign ids are refused alike).
    "references": {"mapping", "target_connection", "run", "blocking", "channels", "alert", "channel", "endpoint"},
    # A bulk action's selection: ids or a filter, not both; a filter needs all_matching.
    "selection": {"non_field_errors", "all_matching"},
    # One value relative to another: a window's start before its end, and a window or dates, not both.
    "order": {"since", "until", "window"},
    # What a connection or channel needs depends on its provider or kind (GET /connections/providers/ lists each
    # provider's fields): email addresses for email, a URL that is not private and a long secret for webhooks.
    "by_kind": {"config", "credentials", "recipients", "url", "secret"},
    # Names are unique in an organization, and the world already has some.
    "unique": {"name"},
    # Only a customer-facing notification rule may email customer contacts; a connection-scoped rule names its
    # connection, a mapping-scoped one its mapping.
    "by_rule": {"customer_contacts", "connection", "mapping"},
}
SEMANTIC_FIELDS = set().union(*BEYOND_THE_SCHEMA.values())


def positive_data_acceptance_beyond_schema(ctx, response, case):
    """positive_data_acceptance, except for a 400 that names only fields of BEYOND_THE_SCHEMA."""
    try:
        return positive_data_acceptance(ctx, response, case)
    except Exception:
        if response.status_code == 400:
            # "config.host" and "field_mappings[2].target_field" are errors of config and field_mappings; a bulk
            # action's {"filter": {"mapping": [...]}} is about its filter's mapping.
            body_errors = (response.json() or {}).get("errors") or {}
            if isinstance(body_errors.get("filter"), dict):
                body_errors = {**body_errors.pop("filter"), **body_errors}
            errors = {re.split(r"[.\[]", name)[0] for name in body_errors}
            if errors and errors <= SEMANTIC_FIELDS:
                return None
        raise


load_all_checks()
CHECKS_ALL = [check if check is not positive_data_acceptance else positive_data_acceptance_beyond_schema
              for check in CHECKS.get_all()]
HEALTH = [HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.filter_too_much]


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
    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "DEFAULT_THROTTLE_RATES": {"api": None}}
    build_world(org)
    build_world(other_org)
    return make_token(org)


def check_operation(case, token):
    case.call_and_validate(headers={"Authorization": f"Bearer {token}"}, checks=CHECKS_ALL)


@schema.parametrize()
# The same examples every run: the normal suite must not fail on a new example one day; the slow run explores.
@settings(max_examples=6, deadline=None, derandomize=True, suppress_health_check=HEALTH)
def test_every_operation_agrees_with_its_schema(case, world_token):
    check_operation(case, world_token)


@pytest.mark.slow
@schema.parametrize()
# Derandomized too: CI must not fail on an example no one has seen before. To explore further, run it with
# `--hypothesis-seed=<n>` (random examples); a disagreement found that way is fixed, then kept here as a test.
@settings(max_examples=40, deadline=None, derandomize=True, suppress_health_check=HEALTH)
def test_every_operation_agrees_with_its_schema_exhaustively(case, world_token):
    check_operation(case, world_token)


def test_the_schema_documents_what_the_server_refuses(client, db):
    """The declarations the checks above rely on, named, so that losing one says what was lost."""
    document = client.get("/api/v1/schema/?format=json").json()
    components = document["components"]["schemas"]

    assert components["MappingValidation"]["properties"]["problems"]["items"] == {
        "$ref": "#/components/schemas/MappingProblem"}
    assert set(components["MappingProblem"]["properties"]) == {"field", "code", "message"}
    assert components["Problem"]["required"] == ["type", "title", "status", "detail", "code", "uuid"]
    assert components["BulkRetryRequest"]["additionalProperties"] is False
    assert components["BulkRetryRequest"]["properties"]["ids"]["minItems"] == 1
    bulk_filter = components["BulkRetryRequest"]["properties"]["filter"]
    assert bulk_filter["additionalProperties"] is False and "mapping" in bulk_filter["properties"]
    assert components["MappingRequest"]["additionalProperties"] is False
    errors = {p["name"]: p for p in document["paths"]["/api/v1/errors/"]["get"]["parameters"]}
    assert errors["since"]["allowEmptyValue"] is True
    assert errors["page_size"]["schema"]["minimum"] == 1
