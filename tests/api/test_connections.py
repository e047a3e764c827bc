"""The connections API: CRUD with write-only credentials, test, reconnect, refresh schema, objects and fields."""

import pytest
from rest_framework.test import APIClient

from accounts.models import TokenRole
from integrations.models import Connection, ConnectionStatus
from tests.api.test_foundation import assert_problem
from tests.syncs.helpers import person, run_mapping

pytestmark = pytest.mark.django_db

URL = "/api/v1/connections/"
MISSING = "00000000-0000-0000-0000-000000000000"
CANARY = "sk_live_canary_7d1e0b"
EXPIRED = {"expired_credentials": True}
CHECK_DOWN = {"operations": ["check"], "failure_rate": 1.0, "failure_kind": "503"}


def url(connection, suffix=""):
    code = connection if isinstance(connection, str) else connection.code
    return f"{URL}{code}/{suffix}"


@pytest.fixture
def viewer_api(make_token):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {make_token(role=TokenRole.VIEWER)}")
    return client


@pytest.fixture
def member_api(make_token):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {make_token(role=TokenRole.MEMBER)}")
    return client


def without_uuid(response):
    return {key: value for key, value in response.json().items() if key != "uuid"}


# --- create, read, update --------------------------------------------------------------------------------------


def test_a_member_creates_a_connection_whose_credentials_are_stored_encrypted_and_never_returned(member_api, org):
    response = member_api.post(URL, {
        "name": "HubSpot EU", "provider": "sandbox", "config": {"default_phone_country": "DE"},
        "credentials": {"api_key": CANARY},
    }, format="json")

    assert response.status_code == 201, response.content
    body = response.json()
    assert body["name"] == "HubSpot EU" and body["provider"] == "sandbox"
    assert body["config"] == {"default_phone_country": "DE"}
    assert body["has_credentials"] is True and "credentials" not in body
    assert body["status"] == "active" and body["last_checked_at"] is None
    connection = Connection.objects.for_org(org).get(code=body["id"])
    assert connection.credentials == {"api_key": CANARY}
    assert CANARY not in connection.credentials_ciphertext


def test_a_connections_concurrency_limit_is_set_within_bounds(api):
    created = api.post(URL, {"name": "Rate-limited", "provider": "sandbox", "max_concurrency": 2}, format="json")
    assert created.status_code == 201 and created.json()["max_concurrency"] == 2

    for value in (0, 33, "many"):
        response = api.patch(url(created.json()["id"]), {"max_concurrency": value}, format="json")
        assert_problem(response, 400)
        assert "max_concurrency" in str(response.json())
    assert api.patch(url(created.json()["id"]), {"max_concurrency": 1}, format="json").json()["max_concurrency"] == 1


def test_a_connection_without_credentials_says_so(api):
    body = api.post(URL, {"name": "Bare", "provider": "sandbox"}, format="json").json()

    assert body["has_credentials"] is False and body["config"] == {}


def test_a_connection_is_read_back_with_every_field(api, make_connection):
    connection = make_connection("Shop", base_url="https://shop.example.com")

    body = api.get(url(connection)).json()

    assert set(body) == {
        "id", "name", "provider", "config", "status", "status_reason", "has_credentials", "max_concurrency",
        "last_checked_at",
        "last_error", "created_at", "updated_at",
    }
    assert body["id"] == str(connection.code) and body["config"] == {"base_url": "https://shop.example.com"}


def test_an_update_without_credentials_keeps_the_current_ones(api, make_connection):
    connection = make_connection("Shop", api_key=CANARY)

    response = api.put(url(connection), {"name": "Shop EU", "provider": "sandbox", "config": {"region": "eu"}},
                       format="json")

    assert response.status_code == 200, response.content
    connection.refresh_from_db()
    assert connection.name == "Shop EU" and connection.config == {"region": "eu"}
    assert connection.credentials == {"api_key": CANARY}


def test_a_partial_update_replaces_the_credentials_and_an_empty_object_removes_them(api, make_connection):
    connection = make_connection("Shop", api_key="sk_old_key")

    api.patch(url(connection), {"credentials": {"api_key": "sk_new_key"}}, format="json")
    connection.refresh_from_db()
    assert connection.credentials == {"api_key": "sk_new_key"} and connection.name == "Shop"

    body = api.patch(url(connection), {"credentials": {}}, format="json").json()
    connection.refresh_from_db()
    assert body["has_credentials"] is False and connection.credentials == {}


def test_the_provider_of_a_connection_cannot_change(api, org):
    legacy = Connection.objects.create(organization=org, name="Old CRM", provider="retired_crm")

    body = assert_problem(api.put(url(legacy), {"name": "Old CRM", "provider": "sandbox"}, format="json"), 400)

    assert "provider" in body["errors"]
    legacy.refresh_from_db()
    assert legacy.provider == "retired_crm"


# --- validation --------------------------------------------------------------------------------------------------


def test_an_unknown_provider_is_refused(api):
    body = assert_problem(api.post(URL, {"name": "X", "provider": "myspace"}, format="json"), 400, "validation_error")

    assert set(body["errors"]) == {"provider"}
    assert not Connection.objects.exists()


def test_a_config_holding_a_secret_is_refused_without_echoing_the_secret(api):
    response = api.post(URL, {
        "name": "Leaky", "provider": "sandbox", "config": {"base_url": "https://x.example", "app": {
            "client_secret": CANARY}},
    }, format="json")

    body = assert_problem(response, 400)
    assert "config.app.client_secret" in body["errors"]["config"][0]
    assert "credentials" in body["errors"]["config"][0]
    assert CANARY not in response.content.decode()
    assert not Connection.objects.exists()


@pytest.mark.parametrize("key", ["password", "token", "api_key", "apiKey", "private_key", "Authorization"])
def test_every_secret_looking_config_key_is_refused(api, key):
    assert_problem(api.post(URL, {"name": "Leaky", "provider": "sandbox", "config": {key: "x"}}, format="json"), 400)


def test_a_secret_looking_flag_in_config_is_not_a_secret(api):
    response = api.post(URL, {"name": "Faulty", "provider": "sandbox", "config": {"faults": EXPIRED}}, format="json")

    assert response.status_code == 201, response.content
    assert response.json()["config"] == {"faults": EXPIRED}


@pytest.mark.parametrize("payload, field", [
    ({"name": "X", "provider": "sandbox", "config": ["not", "an", "object"]}, "config"),
    ({"name": "X", "provider": "sandbox", "config": None}, "config"),
    ({"name": "X", "provider": "sandbox", "config": {"note": "nul\u0000byte"}}, "config"),
    ({"name": "X", "provider": "sandbox", "config": {"note": "x" * 70_000}}, "config"),
    ({"name": "X", "provider": "sandbox", "credentials": "sk_plain_string"}, "credentials"),
    ({"name": "   ", "provider": "sandbox"}, "name"),
    ({"name": "x" * 201, "provider": "sandbox"}, "name"),
    ({"name": 12, "provider": ["sandbox"]}, "provider"),
    ({}, "name"),
])
def test_bad_input_is_a_400_naming_the_field(api, payload, field):
    body = assert_problem(api.post(URL, payload, format="json"), 400, "validation_error")

    assert field in body["errors"]
    assert not Connection.objects.exists()


def test_a_body_that_is_not_an_object_is_a_400(api):
    assert_problem(api.post(URL, ["sandbox"], format="json"), 400)
    assert_problem(api.post(URL, "{not json", content_type="application/json"), 400)


def test_two_connections_of_one_organization_cannot_share_a_name(api, make_connection, other_org):
    make_connection("Shop")
    make_connection("Elsewhere", organization=other_org)

    body = assert_problem(api.post(URL, {"name": "Shop", "provider": "sandbox"}, format="json"), 400)
    assert set(body["errors"]) == {"name"}
    # Another organization's name is free to take, and renaming onto a taken name is refused too.
    created = api.post(URL, {"name": "Elsewhere", "provider": "sandbox"}, format="json")
    assert created.status_code == 201
    assert_problem(api.patch(url(created.json()["id"]), {"name": "Shop"}, format="json"), 400)


# --- list ----------------------------------------------------------------------------------------------------


def test_the_list_filters_by_provider_status_and_name(api, org, make_connection, make_mapping):
    # A real run against a target whose credentials expired marks it needs_reauth.
    target = make_connection("Billing target", faults=EXPIRED)
    mapping = make_mapping(target=target)
    from integrations.connectors.sandbox import seed_records

    seed_records(mapping.source_connection, "contacts", [person(1)])
    run_mapping(mapping)
    Connection.objects.create(organization=org, name="Old CRM", provider="retired_crm")

    def names(query):
        response = api.get(URL + query)
        assert response.status_code == 200, response.content
        return [row["name"] for row in response.json()["results"]]

    assert names("?status=needs_reauth") == ["Billing target"]
    assert names("?provider=sandbox") == sorted([mapping.source_connection.name, "Billing target"])
    assert names("?search=billing") == ["Billing target"]
    assert names("?ordering=-name") == ["Source 0", "Old CRM", "Billing target"]
    assert names("?ordering=status") == ["Source 0", "Old CRM", "Billing target"]  # ties: oldest first
    assert_problem(api.get(URL + "?status=sleeping"), 400)
    assert_problem(api.get(URL + "?provider=myspace"), 400)


def test_the_list_answers_in_a_bounded_number_of_queries(api, org, make_connection, django_assert_max_num_queries):
    for n in range(3):
        make_connection(f"Shop {n}")
    api.get(URL)  # the token's first use is recorded once

    with django_assert_max_num_queries(4):
        assert len(api.get(URL).json()["results"]) == 3
    for n in range(3, 30):
        make_connection(f"Shop {n}")
    with django_assert_max_num_queries(4):
        assert len(api.get(URL).json()["results"]) == 30


# --- delete --------------------------------------------------------------------------------------------------


def test_an_unused_connection_is_deleted(api, make_connection):
    connection = make_connection("Spare")

    assert api.delete(url(connection)).status_code == 204
    assert not Connection.objects.filter(pk=connection.pk).exists()


def test_a_connection_used_by_mappings_cannot_be_deleted_and_the_problem_names_them(api, make_connection,
                                                                                   make_mapping):
    shared = make_connection("Shared CRM")
    first = make_mapping(source=shared)
    second = make_mapping(target=shared)

    body = assert_problem(api.delete(url(shared)), 409, "connection_in_use")

    assert first.name in body["detail"] and second.name in body["detail"]
    assert sorted(m["id"] for m in body["mappings"]) == sorted([str(first.code), str(second.code)])
    assert Connection.objects.filter(pk=shared.pk).exists()


# --- test ----------------------------------------------------------------------------------------------------


def test_testing_a_working_connection_records_the_check(api, make_connection):
    connection = make_connection("Shop")
    connection.last_error = "yesterday's outage"
    connection.save()

    response = api.post(url(connection, "test/"))

    assert response.status_code == 200, response.content
    body = response.json()
    assert body["ok"] is True and body["error"] is None
    connection.refresh_from_db()
    assert connection.last_checked_at is not None and connection.last_error == ""
    assert body["checked_at"].replace("Z", "+00:00") == connection.last_checked_at.isoformat()


def test_testing_a_connection_with_expired_credentials_marks_it_needs_reauth(api, make_connection):
    connection = make_connection("Shop", faults=EXPIRED)

    response = api.post(url(connection, "test/"))

    assert response.status_code == 200
    body = response.json()
    assert body["ok"] is False and body["error"]["category"] == "auth"
    connection.refresh_from_db()
    assert connection.status == ConnectionStatus.NEEDS_REAUTH
    assert connection.last_error == body["error"]["message"] == connection.status_reason
    assert api.get(url(connection)).json()["status"] == "needs_reauth"


def test_testing_an_unreachable_connection_records_the_error_but_leaves_it_active(api, make_connection):
    connection = make_connection("Shop", faults=CHECK_DOWN)

    body = api.post(url(connection, "test/")).json()

    assert body["ok"] is False and body["error"]["category"] == "connection"
    connection.refresh_from_db()
    assert connection.status == ConnectionStatus.ACTIVE and connection.last_error == body["error"]["message"]


def test_testing_a_connection_whose_provider_is_gone_is_a_classified_failure(api, org):
    legacy = Connection.objects.create(organization=org, name="Old CRM", provider="retired_crm")

    body = api.post(url(legacy, "test/")).json()

    assert body["ok"] is False and body["error"]["code"] == "unknown_provider"


# --- reconnect ------------------------------------------------------------------------------------------------


def test_reconnecting_with_new_credentials_makes_the_connection_active_again(api, make_connection):
    connection = make_connection("Shop", api_key="")
    assert api.post(url(connection, "test/")).json()["error"]["category"] == "auth"

    response = api.post(url(connection, "reconnect/"), {"credentials": {"api_key": "sk_fresh_key"}}, format="json")

    assert response.status_code == 200, response.content
    body = response.json()
    assert body["status"] == "active" and body["status_reason"] == "" and body["last_error"] == ""
    assert body["has_credentials"] is True and "credentials" not in body
    connection.refresh_from_db()
    assert connection.credentials == {"api_key": "sk_fresh_key"}


def test_reconnecting_without_a_body_checks_the_current_credentials(api, make_connection):
    connection = make_connection("Shop")
    Connection.objects.filter(pk=connection.pk).update(status=ConnectionStatus.NEEDS_REAUTH, status_reason="expired")

    response = api.post(url(connection, "reconnect/"))

    assert response.status_code == 200 and response.json()["status"] == "active"


def test_a_failed_reconnect_is_a_400_with_the_classified_message(api, make_connection):
    connection = make_connection("Shop", faults=EXPIRED)

    body = assert_problem(api.post(url(connection, "reconnect/")), 400, "reconnect_failed")

    connection.refresh_from_db()
    assert body["error"]["category"] == "auth" and body["detail"] == body["error"]["message"]
    assert connection.status == ConnectionStatus.NEEDS_REAUTH and connection.last_error == body["detail"]


def test_reconnect_refuses_credentials_that_are_not_an_object(api, make_connection):
    connection = make_connection("Shop")

    body = assert_problem(api.post(url(connection, "reconnect/"), {"credentials": ["x"]}, format="json"), 400)

    assert "credentials" in body["errors"]


# --- schema: refresh, objects, fields ------------------------------------------------------------------------


def test_refreshing_the_schema_answers_every_object_and_field_and_stores_nothing(api, make_connection):
    connection = make_connection("Shop", region="eu")

    response = api.post(url(connection, "refresh-schema/"))

    assert response.status_code == 200, response.content
    objects = {obj["name"]: obj for obj in response.json()["objects"]}
    assert set(objects) == {"contacts", "companies", "deals"}
    email = next(field for field in objects["contacts"]["fields"] if field["name"] == "email")
    assert email == {"name": "email", "label": "Email", "type": "email", "required": True, "max_length": 100,
                     "unique": True, "read_only": False, "format": ""}
    connection.refresh_from_db()
    assert connection.config == {"region": "eu"}


def test_the_objects_of_a_connection_are_listed_with_labels(api, make_connection):
    body = api.get(url(make_connection("Shop"), "objects/")).json()

    assert {"name": "contacts", "label": "Contacts"} in body and len(body) == 3


def test_the_fields_of_an_object_have_their_type_and_constraints(api, make_connection):
    response = api.get(url(make_connection("Shop"), "objects/contacts/fields/"))

    assert response.status_code == 200, response.content
    fields = {field["name"]: field for field in response.json()}
    assert fields["id"]["read_only"] is True and fields["id"]["unique"] is True
    assert fields["phone"]["type"] == "phone" and fields["phone"]["format"] == "e164"
    assert fields["last_name"]["required"] is True and fields["last_name"]["max_length"] == 40
    assert fields["notes"]["type"] == "text"


def test_the_fields_of_an_unknown_object_are_a_404(api, make_connection):
    body = assert_problem(api.get(url(make_connection("Shop"), "objects/invoices/fields/")), 404)

    assert "invoices" in body["detail"]


def test_a_connection_whose_provider_is_gone_cannot_describe_its_objects(api, org):
    legacy = Connection.objects.create(organization=org, name="Old CRM", provider="retired_crm")

    body = assert_problem(api.get(url(legacy, "objects/")), 409, "connector_unavailable")

    assert body["error"]["code"] == "unknown_provider"


# --- roles and tenancy ---------------------------------------------------------------------------------------


def test_a_viewer_reads_connections_but_cannot_change_them(viewer_api, make_connection):
    connection = make_connection("Shop", faults=EXPIRED)

    assert viewer_api.get(URL).status_code == 200
    assert viewer_api.get(url(connection)).status_code == 200
    assert viewer_api.get(url(connection, "objects/")).status_code == 200
    assert viewer_api.get(url(connection, "objects/contacts/fields/")).status_code == 200
    assert_problem(viewer_api.post(URL, {"name": "New", "provider": "sandbox"}, format="json"), 403)
    assert_problem(viewer_api.patch(url(connection), {"name": "Renamed"}, format="json"), 403)
    assert_problem(viewer_api.put(url(connection), {"name": "Renamed", "provider": "sandbox"}, format="json"), 403)
    assert_problem(viewer_api.delete(url(connection)), 403)
    for action in ("test/", "reconnect/", "refresh-schema/"):
        assert_problem(viewer_api.post(url(connection, action)), 403)

    connection.refresh_from_db()
    assert connection.name == "Shop" and connection.last_checked_at is None
    assert connection.status == ConnectionStatus.ACTIVE and Connection.objects.count() == 1


@pytest.mark.parametrize("method, suffix", [
    ("get", ""), ("put", ""), ("patch", ""), ("delete", ""), ("post", "test/"), ("post", "reconnect/"),
    ("post", "refresh-schema/"), ("get", "objects/"), ("get", "objects/contacts/fields/"),
])
def test_another_organizations_connection_answers_404_like_a_missing_one(other_api, make_connection, method,
                                                                         suffix):
    connection = make_connection("Shop", faults=EXPIRED)
    body = {"name": "Taken over", "provider": "sandbox", "credentials": {"api_key": "sk_attacker"}}

    foreign = getattr(other_api, method)(url(connection, suffix), body, format="json")
    missing = getattr(other_api, method)(url(MISSING, suffix), body, format="json")

    assert_problem(foreign, 404)
    assert without_uuid(foreign) == without_uuid(missing)
    connection.refresh_from_db()
    assert connection.name == "Shop" and connection.credentials == {"api_key": "sk_test_canary_4f9a"}
    assert connection.last_checked_at is None and connection.status == ConnectionStatus.ACTIVE


def test_another_organizations_connections_are_not_listed(api, make_connection, other_org):
    make_connection("Theirs", organization=other_org)

    assert api.get(URL).json()["results"] == []
    assert api.get(URL + "?search=Theirs").json()["count"] == 0


def test_an_id_that_is_not_a_uuid_is_a_404(api):
    assert_problem(api.get(URL + "42/"), 404)
    assert_problem(api.post(URL + "not-a-uuid/test/"), 404)


# --- secrets -------------------------------------------------------------------------------------------------


def test_credentials_never_appear_in_any_connection_response(api, org, make_connection, make_mapping):
    """The plaintext and the ciphertext of the credentials, searched for in every answer of every endpoint."""
    working = make_connection("Working", api_key=CANARY)
    expired = make_connection("Expired", api_key=CANARY, faults=EXPIRED)
    make_mapping(source=working)
    secrets = {CANARY, working.credentials_ciphertext, expired.credentials_ciphertext}
    responses = [
        api.post(URL, {"name": "New", "provider": "sandbox", "credentials": {"api_key": CANARY}}, format="json"),
        api.post(URL, {"name": "", "provider": "sandbox", "credentials": {"api_key": CANARY}}, format="json"),
        api.post(URL, {"name": "Bad", "provider": "sandbox", "credentials": CANARY}, format="json"),
        api.post(URL, {"name": "Bad", "provider": "sandbox", "config": {"api_key": CANARY}}, format="json"),
        api.get(URL),
        api.get(url(working)),
        api.patch(url(working), {"credentials": {"api_key": CANARY}}, format="json"),
        api.put(url(working), {"name": "Working", "provider": "sandbox", "credentials": {"api_key": CANARY}},
                format="json"),
        api.post(url(working, "test/")),
        api.post(url(expired, "test/")),
        api.post(url(working, "reconnect/"), {"credentials": {"api_key": CANARY}}, format="json"),
        api.post(url(expired, "reconnect/"), {"credentials": {"api_key": CANARY}}, format="json"),
        api.post(url(working, "refresh-schema/")),
        api.get(url(working, "objects/")),
        api.get(url(working, "objects/contacts/fields/")),
        api.delete(url(working)),
        api.get(URL),
    ]
    working.refresh_from_db()
    expired.refresh_from_db()
    secrets |= {working.credentials_ciphertext, expired.credentials_ciphertext}

    assert [r.status_code for r in responses] == [
        201, 400, 400, 400, 200, 200, 200, 200, 200, 200, 200, 400, 200, 200, 200, 409, 200]
    for response in responses:
        text = response.content.decode()
        assert not [secret for secret in secrets if secret in text], (response.request["PATH_INFO"], text)


@pytest.mark.parametrize("address", [
    "http://127.0.0.1:8000/", "http://localhost/", "http://169.254.169.254/latest/meta-data/", "http://10.0.0.5/",
    "http://[fec0::1]/", "http://[::1]/", "file:///etc/passwd",
])
def test_a_connection_to_a_private_loopback_or_metadata_address_is_refused_when_saved(api, address):
    body = assert_problem(api.post(URL, {"name": "Sneaky", "provider": "hubspot", "config": {"base_url": address},
                                         "credentials": {"access_token": "pat-na1-x"}}, format="json"), 400)

    assert set(body["errors"]) == {"config.base_url"}
    assert not Connection.objects.filter(name="Sneaky").exists()


def test_changing_a_connection_to_a_private_address_is_refused_too(api, org):
    connection = Connection.objects.create(organization=org, name="CRM", provider="hubspot")

    body = assert_problem(api.patch(url(connection), {"config": {"base_url": "http://192.168.1.10/"}},
                                    format="json"), 400)

    assert set(body["errors"]) == {"config.base_url"}
    connection.refresh_from_db()
    assert connection.config == {}


def test_the_providers_list_their_connection_forms(api):
    providers = {item["key"]: item for item in api.get(URL + "providers/").json()}

    assert {"sandbox", "hubspot", "salesforce", "pipedrive", "jobber", "shopify", "postgres_table",
            "connector_service"} <= set(providers)
    salesforce = providers["salesforce"]
    assert {field["name"] for field in salesforce["config_fields"]} >= {"instance_url", "base_url"}
    assert all(field["secret"] for field in salesforce["secret_fields"])
    assert "base_url" in {field["name"] for field in providers["hubspot"]["config_fields"]}


def test_a_failed_test_says_what_to_do(api, make_connection):
    connection = make_connection("Expired", faults={"expired_credentials": True})

    body = api.post(url(connection, "test/")).json()

    assert body["ok"] is False
    assert body["error"]["category"] == "auth"
    assert "reconnect" in body["hint"]
