"""The admin refuses what the API refuses: both write through the same services.

Each refusal is made twice, through the REST API (a 4xx problem) and through the real Django admin as a browser
would (a logged-in superuser posting the change form, the delete confirmation and the bulk delete action), and
nothing may change either way.
"""

import json

import pytest
from django.contrib.messages import get_messages
from django.urls import reverse
from rest_framework.test import APIClient

from accounts.models import TokenRole
from accounts.services import api_token_create
from integrations.models import Connection
from mappings.models import FieldMapping, Mapping
from syncs.models import RecordLink, RunStatus, SyncRun, Trigger
from tests.api.test_foundation import assert_problem

pytestmark = pytest.mark.django_db

ACTIVE = [RunStatus.QUEUED, RunStatus.RUNNING]
PRIVATE_ADDRESSES = ["http://10.0.0.5/", "http://127.0.0.1:8000/", "http://169.254.169.254/latest/meta-data/"]


@pytest.fixture
def api(org):
    _token, plain = api_token_create(organization=org, name="parity", role=TokenRole.ADMIN)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {plain}")
    return client


def api_url(obj):
    return f"/api/v1/{'mappings' if isinstance(obj, Mapping) else 'connections'}/{obj.code}/"


def admin_url(model, view, *args):
    return reverse(f"admin:{model._meta.app_label}_{model._meta.model_name}_{view}", args=args)


def snapshot(*objects):
    """Every column of every row, to compare before and after a refused write."""
    rows = {}
    for obj in objects:
        rows[(type(obj).__name__, obj.pk)] = type(obj).objects.filter(pk=obj.pk).values().first()
    return rows


def error_messages(response):
    return [str(message) for message in get_messages(response.wsgi_request) if message.level_tag == "error"]


def delete_in_admin(client, obj):
    """Confirm the deletion on the object's delete page, as a browser does (the page first, then the POST)."""
    page = admin_url(type(obj), "delete", obj.pk)
    assert client.get(page).status_code == 200
    return client.post(page, {"post": "yes"}, follow=True)


def bulk_delete_in_admin(client, model, objects):
    """Select the objects, pick "Delete selected", then confirm on the confirmation page."""
    selection = {"action": "delete_selected", "_selected_action": [obj.pk for obj in objects]}
    changelist = admin_url(model, "changelist")
    assert client.post(changelist, selection).status_code == 200  # the confirmation page
    return client.post(changelist, {**selection, "post": "yes"}, follow=True)


def make_run(mapping, status):
    return SyncRun.objects.create(organization=mapping.organization, mapping=mapping, status=status,
                                  trigger=Trigger.MANUAL)


# --- mappings: delete ------------------------------------------------------------------------------------------


@pytest.fixture(params=ACTIVE)
def busy_mapping(request, make_mapping):
    mapping = make_mapping()
    make_run(mapping, request.param)
    return mapping


def test_the_api_refuses_to_delete_a_mapping_with_an_active_run(api, busy_mapping):
    before = snapshot(busy_mapping, *busy_mapping.runs.all())

    assert_problem(api.delete(api_url(busy_mapping)), 409, "mapping_busy")

    assert snapshot(busy_mapping, *busy_mapping.runs.all()) == before


def test_the_admin_refuses_to_delete_a_mapping_with_an_active_run(admin_client, busy_mapping):
    before = snapshot(busy_mapping, *busy_mapping.runs.all())

    response = delete_in_admin(admin_client, busy_mapping)

    assert response.status_code == 200
    assert [message for message in error_messages(response) if "is queued or running" in message]
    assert "deleted successfully" not in response.content.decode()
    assert snapshot(busy_mapping, *busy_mapping.runs.all()) == before


def test_the_admin_bulk_delete_refuses_busy_mappings_and_deletes_none(admin_client, busy_mapping, make_mapping):
    # As with Django's protected objects: one mapping that cannot go keeps the whole selection.
    idle = make_mapping()
    before = snapshot(busy_mapping, idle, *busy_mapping.runs.all())

    response = bulk_delete_in_admin(admin_client, Mapping, [busy_mapping, idle])

    assert response.status_code == 200
    errors = error_messages(response)
    assert any(busy_mapping.name in message and "is queued or running" in message for message in errors)
    assert not any(idle.name in message for message in errors)
    assert "Successfully deleted" not in response.content.decode()
    assert snapshot(busy_mapping, idle, *busy_mapping.runs.all()) == before


def test_the_admin_bulk_delete_deletes_idle_mappings_through_the_service(admin_client, make_mapping):
    from django_q.models import Schedule

    first, second = make_mapping(schedule_type="interval", schedule_interval_minutes=15), make_mapping()
    Schedule.objects.create(name=f"mapping-{first.pk}", func="syncs.tasks.run_scheduled_mapping")
    make_run(first, RunStatus.SUCCEEDED)

    response = bulk_delete_in_admin(admin_client, Mapping, [first, second])

    assert "Successfully deleted 2 mappings." in response.content.decode()
    assert not Mapping.objects.exists() and not SyncRun.objects.exists()
    assert not Schedule.objects.filter(name=f"mapping-{first.pk}").exists()


# --- mappings: moving a mapping that has synced records ----------------------------------------------------------


def mapping_change_form(mapping, **overrides):
    """The mapping's change form as the admin renders it, field mappings inline included."""
    data = {}
    for name in ("name", "paused_reason", "source_object", "target_object", "direction", "write_mode",
                 "conflict_policy", "error_strategy", "max_retries", "replay_attempts", "default_phone_country",
                 "logging_level", "schedule_type", "schedule_cron"):
        data[name] = getattr(mapping, name)
    for name in ("source_connection", "target_connection"):
        data[name] = getattr(mapping, f"{name}_id")
    for name in ("match_keys", "filters", "retry_schedule"):
        data[name] = json.dumps(getattr(mapping, name))
    for name in ("is_active", "create_if_missing", "automated_replay", "auto_fix"):
        if getattr(mapping, name):
            data[name] = "on"
    data["schedule_interval_minutes"] = mapping.schedule_interval_minutes or ""
    field_mappings = list(mapping.field_mappings.order_by("position", "pk"))
    data["field_mappings-TOTAL_FORMS"] = data["field_mappings-INITIAL_FORMS"] = len(field_mappings)
    for index, fm in enumerate(field_mappings):
        prefix = f"field_mappings-{index}-"
        data.update({prefix + "id": fm.pk, prefix + "mapping": mapping.pk, prefix + "position": fm.position,
                     prefix + "source_field": fm.source_field, prefix + "target_field": fm.target_field,
                     prefix + "transforms": json.dumps(fm.transforms),
                     prefix + "reverse_transforms": json.dumps(fm.reverse_transforms),
                     prefix + "default_value": fm.default_value or ""})
        for name in ("required", "skip_invalid"):
            if getattr(fm, name):
                data[prefix + name] = "on"
    data.update(overrides)
    return data


@pytest.fixture
def linked_mapping(make_mapping):
    """A mapping that has synced a record: its link holds ids of its current source and target."""
    mapping = make_mapping()
    RecordLink.objects.create(organization=mapping.organization, mapping=mapping, source_record_id="ct_0001",
                              target_record_id="ct_9001")
    return mapping


MOVES = ["target_connection", "target_object", "source_connection", "source_object"]


def moved(field, make_connection):
    """The value of `field` that moves the mapping elsewhere: (API body value, admin form value)."""
    if field.endswith("_connection"):
        elsewhere = make_connection(f"Elsewhere {field}")
        return str(elsewhere.code), elsewhere.pk
    return "companies", "companies"


@pytest.mark.parametrize("field", MOVES)
def test_the_api_refuses_to_move_a_mapping_with_synced_records(api, linked_mapping, make_connection, field):
    api_value, _admin_value = moved(field, make_connection)
    before = snapshot(linked_mapping, *linked_mapping.field_mappings.all())

    body = assert_problem(api.patch(api_url(linked_mapping), {field: api_value}, format="json"), 400)

    assert set(body["errors"]) == {field}
    assert "Create a new mapping" in body["errors"][field][0]
    assert snapshot(linked_mapping, *linked_mapping.field_mappings.all()) == before


@pytest.mark.parametrize("field", MOVES)
def test_the_admin_refuses_to_move_a_mapping_with_synced_records(admin_client, linked_mapping, make_connection,
                                                                  field):
    _api_value, admin_value = moved(field, make_connection)
    before = snapshot(linked_mapping, *linked_mapping.field_mappings.all())

    response = admin_client.post(admin_url(Mapping, "change", linked_mapping.pk),
                                 mapping_change_form(linked_mapping, **{field: admin_value}))

    assert response.status_code == 200  # the form again, with the refusal
    assert "Create a new mapping" in response.content.decode()
    assert snapshot(linked_mapping, *linked_mapping.field_mappings.all()) == before


def test_the_admin_still_changes_a_mapping_with_synced_records_in_place(admin_client, linked_mapping):
    response = admin_client.post(admin_url(Mapping, "change", linked_mapping.pk),
                                 mapping_change_form(linked_mapping, name="Renamed"))

    assert response.status_code == 302, response.content.decode()
    linked_mapping.refresh_from_db()
    assert linked_mapping.name == "Renamed"


def test_a_mapping_name_taken_in_the_organization_is_refused_by_both(api, admin_client, make_mapping):
    mapping, other = make_mapping(), make_mapping()
    before = snapshot(mapping)

    body = assert_problem(api.patch(api_url(mapping), {"name": other.name}, format="json"), 400)
    response = admin_client.post(admin_url(Mapping, "change", mapping.pk),
                                 mapping_change_form(mapping, name=other.name))

    assert set(body["errors"]) == {"name"}
    assert response.status_code == 200
    assert "already exists" in response.content.decode()
    assert snapshot(mapping) == before


def test_field_mappings_edited_in_the_admin_are_saved_through_the_mapping(admin_client, make_mapping):
    mapping = make_mapping()
    data = mapping_change_form(mapping, **{"field_mappings-3-DELETE": "on", "field_mappings-0-required": "on"})

    response = admin_client.post(admin_url(Mapping, "change", mapping.pk), data)

    assert response.status_code == 302, response.content.decode()
    assert [(fm.target_field, fm.required, fm.organization_id) for fm in mapping.field_mappings.order_by("position")] \
        == [("email", True, mapping.organization_id), ("first_name", False, mapping.organization_id),
            ("last_name", False, mapping.organization_id)]


def test_a_field_mapping_cannot_be_changed_outside_its_mapping(admin_client, make_mapping, make_connection, other_org):
    # The API has no field mapping resource: they are written with their mapping (mappings.services) only.
    mapping = make_mapping()
    foreign = make_mapping(organization=other_org)
    field_mapping = mapping.field_mappings.first()
    before = snapshot(field_mapping)

    response = admin_client.post(admin_url(FieldMapping, "change", field_mapping.pk),
                                 {"mapping": foreign.pk, "target_field": "email", "position": 0})
    deleted = admin_client.post(admin_url(FieldMapping, "delete", field_mapping.pk), {"post": "yes"})

    assert response.status_code == 403 and deleted.status_code == 403
    assert snapshot(field_mapping) == before


# --- connections: delete -----------------------------------------------------------------------------------------


@pytest.fixture(params=["used", *ACTIVE])
def used_connection(request, make_connection, make_mapping):
    """A connection a mapping uses: idle, or with a run queued or running."""
    connection = make_connection("Shared CRM")
    mapping = make_mapping(target=connection)
    if request.param != "used":
        make_run(mapping, request.param)
    return connection


def test_the_api_refuses_to_delete_a_connection_in_use(api, used_connection):
    before = snapshot(used_connection)

    body = assert_problem(api.delete(api_url(used_connection)), 409, "connection_in_use")

    assert [m["name"] for m in body["mappings"]] == [m.name for m in used_connection.target_mappings.all()]
    assert snapshot(used_connection) == before


def test_the_admin_refuses_to_delete_a_connection_in_use(admin_client, used_connection):
    before = snapshot(used_connection)

    response = delete_in_admin(admin_client, used_connection)

    assert response.status_code == 200
    assert "deleted successfully" not in response.content.decode()
    assert snapshot(used_connection) == before


def test_the_admin_bulk_delete_refuses_connections_in_use_and_deletes_none(admin_client, used_connection,
                                                                           make_connection):
    spare = make_connection("Spare")
    before = snapshot(used_connection, spare)

    response = bulk_delete_in_admin(admin_client, Connection, [used_connection, spare])

    assert response.status_code == 200
    assert "Successfully deleted" not in response.content.decode()
    assert snapshot(used_connection, spare) == before


@pytest.mark.parametrize("how", ["delete page", "bulk action"])
def test_the_service_refuses_a_delete_the_admins_own_check_missed(admin_client, used_connection, monkeypatch, how):
    # Django's confirmation page already lists the mappings that protect a connection; a mapping made between
    # that check and the delete is the service's to refuse, and the admin says so.
    from integrations.admin import ConnectionAdmin

    monkeypatch.setattr(ConnectionAdmin, "get_deleted_objects", lambda self, objs, request: ([], {}, set(), []))
    before = snapshot(used_connection)

    if how == "delete page":
        response = delete_in_admin(admin_client, used_connection)
    else:
        response = bulk_delete_in_admin(admin_client, Connection, [used_connection])

    assert [message for message in error_messages(response) if "is used by the mapping(s)" in message]
    assert "deleted successfully" not in response.content.decode()
    assert "Successfully deleted" not in response.content.decode()
    assert snapshot(used_connection) == before


def test_the_admin_deletes_an_unused_connection(admin_client, make_connection):
    spare = make_connection("Spare")

    response = delete_in_admin(admin_client, spare)

    assert "deleted successfully" in response.content.decode()
    assert not Connection.objects.filter(pk=spare.pk).exists()


# --- connections: create and change -----------------------------------------------------------------------------


def connection_form(connection=None, *, organization=None, **overrides):
    data = {"name": "HubSpot", "provider": "hubspot", "config": "{}", "status": "active", "status_reason": "",
            "new_credentials": "", "max_concurrency": 4}
    if connection is not None:
        data.update({"name": connection.name, "provider": connection.provider, "config": json.dumps(connection.config),
                     "status": connection.status, "status_reason": connection.status_reason,
                     "max_concurrency": connection.max_concurrency})
    else:
        data["organization"] = organization.pk
    data.update(overrides)
    return data


def hubspot(org, name="CRM", **config):
    connection = Connection(organization=org, name=name, provider="hubspot", config=config)
    connection.credentials = {"access_token": "pat-na1-x"}
    connection.save()
    return connection


@pytest.mark.parametrize("address", PRIVATE_ADDRESSES)
def test_a_connection_to_a_private_address_is_created_by_neither(api, admin_client, org, address):
    body = assert_problem(api.post("/api/v1/connections/", {
        "name": "Sneaky", "provider": "hubspot", "config": {"base_url": address},
        "credentials": {"access_token": "pat-na1-x"}}, format="json"), 400)
    response = admin_client.post(admin_url(Connection, "add"), connection_form(
        organization=org, name="Sneaky", config=json.dumps({"base_url": address}),
        new_credentials='{"access_token": "pat-na1-x"}'))

    assert set(body["errors"]) == {"config.base_url"}
    assert response.status_code == 200
    assert "base_url" in response.content.decode()
    assert not Connection.objects.exists()


@pytest.mark.parametrize("address", PRIVATE_ADDRESSES)
def test_a_connection_is_moved_to_a_private_address_by_neither(api, admin_client, org, address):
    connection = hubspot(org)
    before = snapshot(connection)

    body = assert_problem(api.patch(api_url(connection), {"config": {"base_url": address}}, format="json"), 400)
    response = admin_client.post(admin_url(Connection, "change", connection.pk),
                                 connection_form(connection, config=json.dumps({"base_url": address})))

    assert set(body["errors"]) == {"config.base_url"}
    assert response.status_code == 200
    assert snapshot(connection) == before


def test_credentials_missing_a_required_secret_are_refused_by_both(api, admin_client, org):
    connection = hubspot(org)
    before = snapshot(connection)

    body = assert_problem(api.patch(api_url(connection), {"credentials": {"refresh_token": "rt"}}, format="json"),
                          400)
    response = admin_client.post(admin_url(Connection, "change", connection.pk),
                                 connection_form(connection, new_credentials='{"refresh_token": "rt"}'))

    assert set(body["errors"]) == {"credentials.access_token"}
    assert response.status_code == 200
    assert "Access token is required" in response.content.decode()
    assert snapshot(connection) == before


def test_a_connection_name_taken_in_the_organization_is_refused_by_both(api, admin_client, org):
    connection, other = hubspot(org, "CRM"), hubspot(org, "Other CRM")
    before = snapshot(connection)

    body = assert_problem(api.patch(api_url(connection), {"name": other.name}, format="json"), 400)
    response = admin_client.post(admin_url(Connection, "change", connection.pk),
                                 connection_form(connection, name=other.name))

    assert set(body["errors"]) == {"name"}
    assert response.status_code == 200
    assert "Another connection of your organization has this name." in response.content.decode()
    assert snapshot(connection) == before


def test_the_provider_of_a_connection_is_changed_by_neither(api, admin_client, make_connection):
    # The admin shows the provider read-only once created; the service refuses a change whoever asks.
    connection = make_connection("Shop")

    body = assert_problem(api.patch(api_url(connection), {"provider": "hubspot"}, format="json"), 400)
    admin_client.post(admin_url(Connection, "change", connection.pk), connection_form(connection, provider="hubspot"))

    assert set(body["errors"]) == {"provider"}
    connection.refresh_from_db()
    assert connection.provider == "sandbox"


@pytest.mark.parametrize("status", [RunStatus.QUEUED, RunStatus.RUNNING])
def test_an_active_run_is_deleted_by_neither_the_admin_nor_the_api(admin_client, org, make_mapping, status):
    # The API has no way to delete a run; the admin deletes finished ones only, one at a time.
    mapping = make_mapping()
    run = SyncRun.objects.create(organization=org, mapping=mapping, status=status)

    page = admin_client.post(reverse("admin:syncs_syncrun_delete", args=[run.pk]), {"post": "yes"}, follow=True)
    changelist = admin_client.get(reverse("admin:syncs_syncrun_changelist"))

    assert "queued or running" in " ".join(str(m) for m in get_messages(page.wsgi_request))
    assert "delete_selected" not in changelist.content.decode()
    assert SyncRun.objects.filter(pk=run.pk).exists()
    finished = SyncRun.objects.create(organization=org, mapping=mapping, status=RunStatus.SUCCEEDED)
    assert admin_client.post(reverse("admin:syncs_syncrun_delete", args=[finished.pk]),
                             {"post": "yes"}).status_code == 302
    assert not SyncRun.objects.filter(pk=finished.pk).exists()
