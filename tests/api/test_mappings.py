"""Mappings over the API: CRUD with nested field mappings, validation of every setting, the schedule that follows
a mapping, and the actions validate, run (idempotent), test sync, pause and resume."""

import pytest
from django_q.models import Schedule
from rest_framework.test import APIClient

from accounts.models import TokenRole
from integrations.connectors.sandbox import seed_records
from mappings.models import FieldMapping, Mapping
from syncs.models import RecordLink, RunStatus, SyncRun, Trigger
from tests.api.test_foundation import assert_problem
from tests.syncs.helpers import person, records, run_mapping

pytestmark = pytest.mark.django_db

MISSING = "00000000-0000-0000-0000-000000000000"
CANARY = "sk_test_canary_4f9a"  # the sandbox connections' API key: it must never appear in an answer


def url(mapping=None, action=""):
    if mapping is None:
        return "/api/v1/mappings/"
    code = mapping if isinstance(mapping, str) else mapping.code
    return f"/api/v1/mappings/{code}/" + (f"{action}/" if action else "")


@pytest.fixture
def shop(make_connection):
    return make_connection("Shop")


@pytest.fixture
def crm(make_connection):
    return make_connection("CRM")


@pytest.fixture
def body(shop, crm):
    """A complete, valid mapping as an operator would send it."""
    return {
        "name": "Shop contacts → CRM",
        "source_connection": str(shop.code),
        "source_object": "contacts",
        "target_connection": str(crm.code),
        "target_object": "contacts",
        "match_keys": [{"source": "email", "target": "email"}],
        "error_strategy": "retry",
        "retry_schedule": [30, 120],
        "retry_policy": {"timeout": {"retry": True, "attempts": 5, "delays": [60, 300]}},
        "filters": [{"field": "email", "op": "empty", "reason": "Contacts without an email cannot be matched"}],
        "field_mappings": [
            {"source_field": "email", "target_field": "email", "transforms": [{"name": "email_normalize"}],
             "required": True},
            {"source_field": "first_name", "target_field": "first_name",
             "transforms": [{"name": "trim"}, {"name": "truncate", "args": {"length": 40}}]},
            {"source_field": "last_name", "target_field": "last_name", "default_value": "Unknown"},
            {"source_field": "phone", "target_field": "phone", "transforms": [{"name": "phone_e164"}],
             "skip_invalid": True},
        ],
    }


def create(api, body, **changes):
    return api.post(url(), {**body, **changes}, format="json")


def without_uuid(problem):
    return {key: value for key, value in problem.json().items() if key != "uuid"}


def client_with(make_token, role):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {make_token(role=role, name=role)}")
    return client


# --- create, read, update, delete ---------------------------------------------------------------------------------


def test_a_mapping_is_created_with_its_field_mappings_in_order(api, body, org, shop, crm):
    response = create(api, body)

    assert response.status_code == 201, response.content
    created = response.json()
    mapping = Mapping.objects.get()
    assert created["id"] == str(mapping.code)
    assert mapping.organization == org and mapping.source_connection == shop and mapping.target_connection == crm
    assert created["source_connection"] == str(shop.code) and created["target_connection"] == str(crm.code)
    assert created["retry_policy"] == body["retry_policy"] and created["retry_schedule"] == [30, 120]
    assert created["filters"] == body["filters"] and created["match_keys"] == body["match_keys"]
    assert [fm["target_field"] for fm in created["field_mappings"]] == ["email", "first_name", "last_name", "phone"]
    assert [fm["position"] for fm in created["field_mappings"]] == [0, 1, 2, 3]
    assert created["field_mappings"][1]["transforms"] == [{"name": "trim"}, {"name": "truncate",
                                                                             "args": {"length": 40}}]
    assert created["field_mappings"][2]["default_value"] == "Unknown"
    assert FieldMapping.objects.filter(mapping=mapping, organization=org).count() == 4
    assert created["is_active"] is True and created["paused_reason"] == ""
    assert created["last_successful_sync_at"] is None and created["created_at"] and created["updated_at"]
    assert CANARY not in response.content.decode()


def test_a_mapping_answers_everything_an_operator_configures(api, make_mapping):
    mapping = make_mapping(auto_fix=True, default_phone_country="GB", batch_size=250, logging_level="all",
                           conflict_policy="newest_wins", direction="two_way", write_mode="update_only")

    shown = api.get(url(mapping)).json()

    assert set(shown) == {
        "id", "name", "source_connection", "source_object", "target_connection", "target_object", "direction",
        "match_keys", "write_mode", "create_if_missing", "conflict_policy", "error_strategy", "retry_schedule",
        "max_retries", "retry_policy", "automated_replay", "replay_attempts", "logging_level", "auto_fix",
        "default_phone_country", "filters", "batch_size", "schedule_type", "schedule_interval_minutes",
        "schedule_cron", "is_active", "paused_reason", "pause_after_failed_runs", "last_successful_sync_at",
        "created_at", "updated_at", "field_mappings",
    }
    assert (shown["auto_fix"], shown["default_phone_country"], shown["batch_size"]) == (True, "GB", 250)
    assert (shown["direction"], shown["write_mode"], shown["conflict_policy"]) == ("two_way", "update_only",
                                                                                  "newest_wins")
    assert shown["retry_schedule"] == [60, 300, 1800] and shown["max_retries"] == 3


def test_a_successful_run_shows_as_the_last_successful_sync(api, make_mapping):
    mapping = make_mapping()
    seed_records(mapping.source_connection, "contacts", [person(1), person(2)])
    run_mapping(mapping)

    shown = api.get(url(mapping)).json()

    assert shown["last_successful_sync_at"] is not None


def test_a_put_with_field_mappings_replaces_them(api, body):
    created = create(api, body).json()
    replaced = {**created, "name": "Renamed", "field_mappings": [
        {"source_field": "email", "target_field": "email"},
        {"source_field": "last_name", "target_field": "last_name", "transforms": [{"name": "uppercase"}]},
    ]}

    response = api.put(url(created["id"]), replaced, format="json")

    assert response.status_code == 200, response.content
    assert response.json()["name"] == "Renamed"
    assert [fm["target_field"] for fm in response.json()["field_mappings"]] == ["email", "last_name"]
    assert list(FieldMapping.objects.order_by("position").values_list("target_field", "transforms")) == [
        ("email", []), ("last_name", [{"name": "uppercase"}])]


def test_a_patch_without_field_mappings_keeps_them(api, body):
    created = create(api, body).json()

    response = api.patch(url(created["id"]), {"error_strategy": "manual_review", "auto_fix": True}, format="json")

    assert response.status_code == 200, response.content
    assert response.json()["error_strategy"] == "manual_review" and response.json()["auto_fix"] is True
    assert len(response.json()["field_mappings"]) == 4
    assert FieldMapping.objects.count() == 4


def test_a_patch_with_field_mappings_replaces_the_list(api, body):
    created = create(api, body).json()

    response = api.patch(url(created["id"]), {"field_mappings": [{"source_field": "email", "target_field": "email"}]},
                         format="json")

    assert response.status_code == 200, response.content
    assert [fm["target_field"] for fm in response.json()["field_mappings"]] == ["email"]
    assert FieldMapping.objects.get().required is False  # the model's defaults fill what was not sent


def test_a_rejected_update_changes_nothing(api, body):
    created = create(api, body).json()

    response = api.patch(url(created["id"]), {"name": "Changed", "field_mappings": [
        {"source_field": "email", "target_field": "email", "transforms": [{"name": "shout"}]}]}, format="json")

    assert_problem(response, 400)
    assert Mapping.objects.get().name == body["name"]
    assert FieldMapping.objects.count() == 4


def test_the_source_and_target_of_a_mapping_with_synced_records_cannot_move(api, make_mapping, make_connection):
    mapping = make_mapping()
    seed_records(mapping.source_connection, "contacts", [person(1)])
    run_mapping(mapping)
    assert RecordLink.objects.filter(mapping=mapping).exists()

    response = api.patch(url(mapping), {"target_connection": str(make_connection("Elsewhere").code),
                                        "source_object": "companies"}, format="json")

    body = assert_problem(response, 400)
    assert set(body["errors"]) == {"target_connection", "source_object"}
    assert "Create a new mapping" in body["errors"]["target_connection"][0]


def test_a_mapping_is_deleted_with_its_schedule(api, body):
    created = create(api, body, schedule_type="interval", schedule_interval_minutes=15).json()
    pk = Mapping.objects.get().pk
    assert Schedule.objects.filter(name=f"mapping-{pk}").exists()

    response = api.delete(url(created["id"]))

    assert response.status_code == 204
    assert not Mapping.objects.exists() and not FieldMapping.objects.exists()
    assert not Schedule.objects.filter(name=f"mapping-{pk}").exists()
    assert_problem(api.get(url(created["id"])), 404)


def test_a_mapping_with_a_queued_run_is_not_deleted_under_it(api, make_mapping):
    mapping = make_mapping()
    assert api.post(url(mapping, "run")).status_code == 202

    assert_problem(api.delete(url(mapping)), 409, "mapping_busy")
    assert Mapping.objects.filter(pk=mapping.pk).exists()


# --- listing --------------------------------------------------------------------------------------------------------


def test_the_list_filters_by_connection_state_strategy_and_direction(api, make_mapping, make_connection):
    shop = make_connection("Shop")
    crm = make_connection("CRM")
    from_shop = make_mapping(source=shop, error_strategy="retry")
    to_crm = make_mapping(target=crm, direction="two_way")
    paused = make_mapping(is_active=False, error_strategy="fail_fast")

    def names(**query):
        response = api.get(url(), query)
        assert response.status_code == 200, response.content
        return {row["name"] for row in response.json()["results"]}

    assert names() == {from_shop.name, to_crm.name, paused.name}
    assert names(source_connection=str(shop.code)) == {from_shop.name}
    assert names(target_connection=str(crm.code)) == {to_crm.name}
    assert names(is_active="false") == {paused.name}
    assert names(error_strategy="retry") == {from_shop.name}
    assert names(direction="two_way") == {to_crm.name}
    assert names(source_connection=MISSING) == set()


def test_the_list_searches_names_and_orders(api, make_mapping):
    first, second, third = make_mapping(), make_mapping(), make_mapping()
    Mapping.objects.filter(pk=first.pk).update(name="Invoices to ledger")
    Mapping.objects.filter(pk=second.pk).update(name="Contacts to CRM")
    Mapping.objects.filter(pk=third.pk).update(name="Contacts to helpdesk")

    searched = api.get(url(), {"search": "contacts", "ordering": "-name"}).json()["results"]

    assert [row["name"] for row in searched] == ["Contacts to helpdesk", "Contacts to CRM"]
    assert [row["name"] for row in api.get(url()).json()["results"]] == [
        "Contacts to CRM", "Contacts to helpdesk", "Invoices to ledger"]


def test_the_list_answers_400_for_unknown_filter_values(api):
    assert_problem(api.get(url(), {"error_strategy": "pray"}), 400)
    assert_problem(api.get(url(), {"source_connection": "not-a-uuid"}), 400)


def test_the_list_shows_only_the_callers_organization(api, other_api, make_mapping, other_org):
    make_mapping()
    theirs = make_mapping(organization=other_org)

    assert theirs.name not in {row["name"] for row in api.get(url()).json()["results"]}
    assert [row["name"] for row in other_api.get(url()).json()["results"]] == [theirs.name]


@pytest.mark.parametrize("count", [3, 30])
def test_listing_mappings_costs_the_same_queries_for_few_or_many(api, make_mapping, count,
                                                                 django_assert_max_num_queries):
    for _ in range(count):
        make_mapping()

    with django_assert_max_num_queries(5):
        response = api.get(url(), {"limit": 100})

    assert response.status_code == 200
    assert len(response.json()["results"]) == count
    assert all(len(row["field_mappings"]) == 4 for row in response.json()["results"])


# --- tenancy and roles ----------------------------------------------------------------------------------------------


def test_another_organizations_mapping_answers_404_like_a_missing_one(api, other_api, make_mapping):
    mapping = make_mapping()
    calls = [
        ("get", ""), ("put", ""), ("patch", ""), ("delete", ""), ("post", "validate"), ("post", "run"),
        ("post", "test-sync"), ("post", "pause"), ("post", "resume"),
    ]
    for method, action in calls:
        foreign = getattr(other_api, method)(url(mapping, action), {}, format="json")
        missing = getattr(other_api, method)(url(MISSING, action), {}, format="json")
        assert_problem(foreign, 404)
        assert without_uuid(foreign) == without_uuid(missing), (method, action)
    assert not SyncRun.objects.exists()
    mapping.refresh_from_db()
    assert mapping.is_active


def test_another_organizations_connection_in_a_body_answers_404_like_a_missing_one(api, body, make_connection,
                                                                                  other_org):
    theirs = make_connection("Their CRM", organization=other_org)

    foreign = create(api, body, target_connection=str(theirs.code))
    missing = create(api, body, target_connection=MISSING)
    not_even_a_uuid = create(api, body, target_connection="crm")

    for response in (foreign, missing, not_even_a_uuid):
        assert_problem(response, 404)
    assert without_uuid(foreign)["detail"].replace(str(theirs.code), MISSING) == without_uuid(missing)["detail"]
    assert not Mapping.objects.exists()


def test_a_viewer_can_read_and_validate_but_change_nothing(make_token, make_mapping, body):
    mapping = make_mapping()
    viewer = client_with(make_token, TokenRole.VIEWER)

    assert viewer.get(url()).status_code == 200
    assert viewer.get(url(mapping)).status_code == 200
    assert viewer.post(url(mapping, "validate")).status_code == 200
    for response in (
        viewer.post(url(), body, format="json"),
        viewer.patch(url(mapping), {"name": "Mine now"}, format="json"),
        viewer.put(url(mapping), body, format="json"),
        viewer.delete(url(mapping)),
        viewer.post(url(mapping, "run")),
        viewer.post(url(mapping, "test-sync"), {}, format="json"),
        viewer.post(url(mapping, "pause"), {"reason": "no"}, format="json"),
        viewer.post(url(mapping, "resume")),
    ):
        assert_problem(response, 403)
    mapping.refresh_from_db()
    assert mapping.name != "Mine now" and mapping.is_active
    assert not SyncRun.objects.exists()


def test_a_member_can_change_mappings(make_token, body):
    member = client_with(make_token, TokenRole.MEMBER)

    assert member.post(url(), body, format="json").status_code == 201


def test_without_a_token_nothing_is_shown(make_mapping):
    mapping = make_mapping()

    assert_problem(APIClient().get(url()), 401)
    assert_problem(APIClient().post(url(mapping, "run")), 401)


# --- validation of what is sent ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(("changes", "field"), [
    ({"direction": "sideways"}, "direction"),
    ({"write_mode": "overwrite"}, "write_mode"),
    ({"conflict_policy": "coin_flip"}, "conflict_policy"),
    ({"error_strategy": "pray"}, "error_strategy"),
    ({"logging_level": "verbose"}, "logging_level"),
    ({"schedule_type": "hourly"}, "schedule_type"),
    ({"batch_size": 0}, "batch_size"),
    ({"batch_size": 5000}, "batch_size"),
    ({"max_retries": -1}, "max_retries"),
    ({"max_retries": "three"}, "max_retries"),
    ({"auto_fix": "sometimes"}, "auto_fix"),
    ({"name": ""}, "name"),
    ({"name": "x" * 201}, "name"),
    ({"default_phone_country": "XX"}, "default_phone_country"),
    ({"match_keys": {"source": "email"}}, "match_keys"),
    ({"match_keys": [{"source": "email"}]}, "match_keys[0].target"),
    ({"match_keys": [{"source": "email", "target": "email", "fuzzy": True}]}, "match_keys[0]"),
    ({"match_keys": ["email"]}, "match_keys[0]"),
    ({"filters": [{"field": "email", "op": "like", "value": "%@x", "reason": "r"}]}, "filters[0].op"),
    ({"filters": [{"field": "email", "op": "empty"}]}, "filters[0].reason"),
    ({"filters": [{"field": "email", "op": "equals", "reason": "r"}]}, "filters[0].value"),
    ({"filters": [{"field": "email", "op": "in", "value": "a@b.c", "reason": "r"}]}, "filters[0].value"),
    ({"filters": [{"field": "email", "op": "empty", "value": 1, "reason": "r"}]}, "filters[0].value"),
    ({"filters": [{"op": "empty", "reason": "r"}]}, "filters[0].field"),
    ({"filters": [{"field": "email", "op": "empty", "reason": "r", "why": "?"}]}, "filters[0]"),
    ({"filters": "email is empty"}, "filters"),
    ({"retry_schedule": [60, 0]}, "retry_schedule"),
    ({"retry_schedule": [60, "5m"]}, "retry_schedule"),
    ({"retry_schedule": []}, "retry_schedule"),
    ({"retry_schedule": [10**12]}, "retry_schedule"),
    ({"retry_policy": {"cosmic_rays": {"retry": True}}}, "retry_policy"),
    ({"retry_policy": {"timeout": {"retry": "yes"}}}, "retry_policy"),
    ({"retry_policy": {"timeout": {"delays": [10**12]}}}, "retry_policy"),
    ({"retry_policy": []}, "retry_policy"),
    ({"schedule_type": "interval"}, "schedule_interval_minutes"),
    ({"schedule_type": "interval", "schedule_interval_minutes": 0}, "schedule_interval_minutes"),
    ({"schedule_type": "cron"}, "schedule_cron"),
    ({"schedule_type": "cron", "schedule_cron": "every day"}, "schedule_cron"),
    ({"schedule_type": "cron", "schedule_cron": "0 0 31 2 *"}, "schedule_cron"),
    ({"schedule_type": "cron", "schedule_cron": "* * * * * *"}, "schedule_cron"),
    ({"source_object": "x" * 101}, "source_object"),
    ({"colour": "blue"}, "colour"),
    ({"filters": [{"field": "email", "op": "equals", "value": "a\u0000b", "reason": "r"}]}, "filters"),
])
def test_a_setting_that_is_not_valid_is_a_400_naming_its_field(api, body, changes, field):
    response = create(api, body, **changes)

    problem = assert_problem(response, 400, "validation_error")
    assert field in problem["errors"], problem["errors"]
    assert problem["detail"].startswith(field)
    assert not Mapping.objects.exists()


@pytest.mark.parametrize(("field_mapping", "field"), [
    ({"source_field": "email"}, "field_mappings[1].target_field"),
    ({"source_field": "email", "target_field": "x" * 101}, "field_mappings[1].target_field"),
    ({"source_field": "email", "target_field": "company", "transforms": [{"name": "shout"}]},
     "field_mappings[1].transforms"),
    ({"source_field": "email", "target_field": "company", "transforms": [{"name": "truncate"}]},
     "field_mappings[1].transforms"),
    ({"source_field": "email", "target_field": "company", "transforms": "trim"}, "field_mappings[1].transforms"),
    ({"source_field": "email", "target_field": "company", "reverse_transforms": [{"name": "split", "args": {}}]},
     "field_mappings[1].reverse_transforms"),
    ({"source_field": "email", "target_field": "company", "transforms": [{"name": "default",
                                                                          "args": {"value": "\u0000"}}]},
     "field_mappings[1].transforms"),
    ({"source_field": "email", "target_field": "company", "position": -1}, "field_mappings[1].position"),
    ({"source_field": "email", "target_field": "company", "required": "maybe"}, "field_mappings[1].required"),
    ({"source_field": "email", "target_field": "company", "color": "red"}, "field_mappings[1].color"),
    ({"source_field": "first_name", "target_field": "email"}, "field_mappings[1].target_field"),
    ("email → email", "field_mappings[1]"),
])
def test_a_field_mapping_that_is_not_valid_is_a_400_naming_its_place(api, body, field_mapping, field):
    field_mappings = [{"source_field": "email", "target_field": "email"}, field_mapping]

    response = create(api, body, field_mappings=field_mappings)

    problem = assert_problem(response, 400, "validation_error")
    assert field in problem["errors"], problem["errors"]
    assert not Mapping.objects.exists() and not FieldMapping.objects.exists()


def test_field_mappings_must_be_a_list(api, body):
    problem = assert_problem(create(api, body, field_mappings={"email": "email"}), 400)

    assert "field_mappings" in problem["errors"]


def test_every_problem_is_reported_at_once(api, body):
    response = create(api, body, retry_schedule=[0], filters=[{"field": "", "op": "empty", "reason": "r"}],
                      field_mappings=[{"source_field": "email", "target_field": "email",
                                       "transforms": [{"name": "shout"}]}])
    assert set(assert_problem(response, 400)["errors"]) == {
        "retry_schedule", "filters[0].field", "field_mappings[0].transforms"}


def test_a_name_already_used_in_the_organization_is_a_400(api, body):
    assert create(api, body).status_code == 201

    problem = assert_problem(create(api, body), 400)

    assert "already exists" in problem["errors"]["name"][0]


def test_the_same_name_in_another_organization_is_fine(api, other_api, body, make_connection, other_org):
    assert create(api, body).status_code == 201
    theirs = {**body, "source_connection": str(make_connection("A", organization=other_org).code),
              "target_connection": str(make_connection("B", organization=other_org).code)}

    assert other_api.post(url(), theirs, format="json").status_code == 201


@pytest.mark.parametrize("payload", [[], "a mapping", 42, None])
def test_a_body_that_is_not_an_object_is_a_400(api, payload):
    response = api.post(url(), payload, format="json")

    assert_problem(response, 400)


def test_an_empty_body_names_every_required_field(api):
    problem = assert_problem(api.post(url(), {}, format="json"), 400)

    assert set(problem["errors"]) == {"name", "source_connection", "source_object", "target_connection",
                                      "target_object"}


def test_the_phone_country_is_stored_in_capitals(api, body):
    assert create(api, body, default_phone_country="gb").json()["default_phone_country"] == "GB"


def test_the_body_of_a_get_can_be_sent_back_as_a_put(api, body):
    created = create(api, body).json()

    response = api.put(url(created["id"]), created, format="json")

    assert response.status_code == 200, response.content
    assert {k: v for k, v in response.json().items() if k != "updated_at"} == {
        k: v for k, v in created.items() if k != "updated_at"}


# --- the schedule follows the mapping --------------------------------------------------------------------------------


def test_the_schedule_row_follows_the_mapping(api, body):
    created = create(api, body, schedule_type="interval", schedule_interval_minutes=15).json()
    name = f"mapping-{Mapping.objects.get().pk}"

    schedule = Schedule.objects.get(name=name)
    assert (schedule.schedule_type, schedule.minutes, schedule.func) == (
        Schedule.MINUTES, 15, "syncs.tasks.run_scheduled_mapping")

    api.patch(url(created["id"]), {"schedule_type": "cron", "schedule_cron": "0 3 * * 1-5"}, format="json")
    schedule = Schedule.objects.get(name=name)
    assert (schedule.schedule_type, schedule.cron) == (Schedule.CRON, "0 3 * * 1-5")

    api.post(url(created["id"], "pause"), {"reason": "Quarter close"}, format="json")
    assert not Schedule.objects.filter(name=name).exists()

    api.post(url(created["id"], "resume"))
    assert Schedule.objects.get(name=name).cron == "0 3 * * 1-5"

    api.patch(url(created["id"]), {"schedule_type": "none"}, format="json")
    assert not Schedule.objects.filter(name=name).exists()


def test_a_mapping_created_inactive_gets_no_schedule(api, body):
    create(api, body, schedule_type="interval", schedule_interval_minutes=5, is_active=False)

    assert not Schedule.objects.filter(name__startswith="mapping-").exists()


# --- validate -------------------------------------------------------------------------------------------------------


def test_a_mapping_that_matches_both_schemas_is_valid(api, make_mapping):
    response = api.post(url(make_mapping(), "validate"))

    assert response.status_code == 200
    assert response.json() == {"valid": True, "problems": []}


def test_validate_reports_every_field_that_does_not_exist_or_is_missing(api, make_mapping):
    mapping = make_mapping(
        fields=("email", "first_name"),
        match_keys=[{"source": "email", "target": "e_mail"}],
        filters=[{"field": "segment", "op": "empty", "reason": "No segment"}],
    )
    FieldMapping.objects.create(organization=mapping.organization, mapping=mapping, source_field="nickname",
                                target_field="first_name_2", position=5)
    FieldMapping.objects.create(organization=mapping.organization, mapping=mapping, source_field="email",
                                target_field="id", position=6)

    response = api.post(url(mapping, "validate"))

    assert response.status_code == 200
    result = response.json()
    assert result["valid"] is False
    found = {(p["field"], p["code"]) for p in result["problems"]}
    assert found == {
        ("field_mappings[2].source_field", "field_not_found"),
        ("field_mappings[2].target_field", "field_not_found"),
        ("field_mappings[3].target_field", "read_only"),
        ("match_keys[0].target", "field_not_found"),
        ("filters[0].field", "field_not_found"),
        ("target_object", "required_unmapped"),  # last_name is required by the sandbox's contacts
    }
    assert all(p["message"] for p in result["problems"])
    assert not SyncRun.objects.exists()  # validating runs nothing


def test_validate_reports_a_missing_object_and_an_unreachable_connection(api, make_mapping, make_connection):
    stale = make_connection("Stale")
    stale.status, stale.status_reason = "needs_reauth", "The refresh token was revoked"
    stale.save()
    mapping = make_mapping(target=stale)
    Mapping.objects.filter(pk=mapping.pk).update(source_object="tickets")

    problems = api.post(url(mapping, "validate")).json()["problems"]

    codes = {(p["field"], p["code"]) for p in problems}
    assert ("source_object", "object_not_found") in codes
    assert ("target_connection", "connection_needs_reauth") in codes


def test_an_update_only_mapping_need_not_write_required_fields(api, make_mapping):
    mapping = make_mapping(fields=("email", "first_name"), write_mode="update_only")

    assert api.post(url(mapping, "validate")).json() == {"valid": True, "problems": []}


# --- run now ----------------------------------------------------------------------------------------------------------


def test_run_queues_a_manual_run_and_answers_202(api, make_mapping):
    mapping = make_mapping()

    response = api.post(url(mapping, "run"))

    assert response.status_code == 202, response.content
    run = SyncRun.objects.get()
    assert response.json() == {"id": str(run.code), "status": "queued", "trigger": "manual",
                               "mapping": str(mapping.code), "already_active": False}
    assert run.trigger == Trigger.MANUAL and not run.is_test


def test_the_queued_run_runs_when_the_request_commits(api, make_mapping, django_capture_on_commit_callbacks):
    mapping = make_mapping()
    seed_records(mapping.source_connection, "contacts", [person(1), person(2)])

    with django_capture_on_commit_callbacks(execute=True):
        response = api.post(url(mapping, "run"), {"full": True}, format="json")

    run = SyncRun.objects.get(code=response.json()["id"])
    assert run.status == RunStatus.SUCCEEDED and run.created == 2
    assert len(records(mapping.target_connection)) == 2


def test_a_second_run_while_one_is_queued_answers_the_active_run(api, make_mapping):
    mapping = make_mapping()
    first = api.post(url(mapping, "run")).json()

    second = api.post(url(mapping, "run"))

    assert second.status_code == 202
    assert second.json()["id"] == first["id"] and second.json()["already_active"] is True
    assert SyncRun.objects.count() == 1


def test_a_repeated_idempotency_key_answers_the_same_run(api, make_mapping, django_capture_on_commit_callbacks):
    mapping = make_mapping()
    with django_capture_on_commit_callbacks(execute=True):
        first = api.post(url(mapping, "run"), HTTP_IDEMPOTENCY_KEY="run-2026-11-22")

    # The first run finished: without the key a second run would be queued; with it the first answer comes back.
    again = api.post(url(mapping, "run"), HTTP_IDEMPOTENCY_KEY="run-2026-11-22")

    assert again.status_code == 202
    assert again.json() == first.json() and again["Idempotent-Replayed"] == "true"
    assert SyncRun.objects.count() == 1


def test_the_same_idempotency_key_with_another_body_is_a_422(api, make_mapping):
    mapping, other = make_mapping(), make_mapping()
    assert api.post(url(mapping, "run"), HTTP_IDEMPOTENCY_KEY="k1").status_code == 202

    assert_problem(api.post(url(mapping, "run"), {"full": True}, format="json", HTTP_IDEMPOTENCY_KEY="k1"), 422,
                   "idempotency_key_reused")
    assert_problem(api.post(url(other, "run"), HTTP_IDEMPOTENCY_KEY="k1"), 422)
    assert SyncRun.objects.count() == 1


def test_run_refuses_an_unknown_option(api, make_mapping):
    assert "fast" in assert_problem(api.post(url(make_mapping(), "run"), {"fast": True}, format="json"), 400)[
        "errors"]
    assert not SyncRun.objects.exists()


# --- test sync --------------------------------------------------------------------------------------------------------


def test_a_test_sync_answers_the_plan_and_writes_nothing(api, make_mapping):
    mapping = make_mapping()
    seed_records(mapping.source_connection, "contacts", [person(1), person(2, last_name=""), person(3)],
                 ids=["c1", "c2", "c3"])
    seed_records(mapping.target_connection, "contacts", [person(3, first_name="Old")])

    response = api.post(url(mapping, "test-sync"), {"sample_size": 3}, format="json")

    assert response.status_code == 200, response.content
    result = response.json()
    run = SyncRun.objects.get()
    assert result["id"] == str(run.code) and run.is_test and result["write"] is False
    assert result["status"] == "partially_failed"
    assert result["counts"] == {"read": 3, "created": 1, "updated": 1, "unchanged": 0, "skipped": 0, "ignored": 0,
                                "warned": 0, "failed": 1}
    plan = {entry["record_id"]: entry for entry in result["plan"]}
    assert {key: entry["action"] for key, entry in plan.items()} == {"c1": "create", "c2": "failed",
                                                                    "c3": "update"}
    assert "last_name" in plan["c2"]["errors"][0]
    assert plan["c3"]["changes"] == {"first_name": {"current": "Old", "new": "First3"}}
    assert plan["c3"]["current"]["first_name"] == "Old" and plan["c1"]["current"] is None
    assert plan["c1"]["payload"]["email"] == "person1@example.com"
    assert len(records(mapping.target_connection)) == 1
    assert CANARY not in response.content.decode()


def test_a_test_sync_with_write_writes_just_its_sample(api, make_mapping):
    mapping = make_mapping()
    seed_records(mapping.source_connection, "contacts", [person(n) for n in range(6)])

    result = api.post(url(mapping, "test-sync"), {"sample_size": 2, "write": True}, format="json").json()

    assert result["write"] is True and result["counts"]["created"] == 2 and result["plan"] == []
    assert len(records(mapping.target_connection)) == 2


def test_a_test_sync_against_a_target_with_expired_credentials_reports_it(api, make_mapping, make_connection):
    mapping = make_mapping(target=make_connection("Expired", faults={"expired_credentials": True}))
    seed_records(mapping.source_connection, "contacts", [person(1)])

    result = api.post(url(mapping, "test-sync"), {}, format="json").json()

    assert result["status"] == "failed" and result["system_error"]
    assert result["plan"][0]["record_id"] is None and result["plan"][0]["category"] == "auth"


def test_a_test_sync_that_writes_waits_for_an_active_run(api, make_mapping):
    mapping = make_mapping()
    api.post(url(mapping, "run"))

    assert_problem(api.post(url(mapping, "test-sync"), {"write": True}, format="json"), 409, "mapping_busy")


@pytest.mark.parametrize("payload", [{"sample_size": 0}, {"sample_size": 101}, {"sample_size": "ten"},
                                     {"write": "perhaps"}, {"samples": 5}])
def test_a_test_sync_checks_its_body(api, make_mapping, payload):
    assert_problem(api.post(url(make_mapping(), "test-sync"), payload, format="json"), 400)
    assert not SyncRun.objects.exists()


# --- pause and resume -------------------------------------------------------------------------------------------------


def test_pause_keeps_the_reason_and_resume_clears_it(api, make_mapping):
    mapping = make_mapping()

    paused = api.post(url(mapping, "pause"), {"reason": "CRM migration this weekend"}, format="json")

    assert paused.status_code == 200
    assert paused.json()["is_active"] is False and paused.json()["paused_reason"] == "CRM migration this weekend"
    assert api.get(url(), {"is_active": "false"}).json()["count"] == 1

    resumed = api.post(url(mapping, "resume"))

    assert resumed.status_code == 200
    assert resumed.json()["is_active"] is True and resumed.json()["paused_reason"] == ""


def test_pause_needs_a_reason(api, make_mapping):
    mapping = make_mapping()

    problem = assert_problem(api.post(url(mapping, "pause"), {}, format="json"), 400)

    assert "reason" in problem["errors"]
    mapping.refresh_from_db()
    assert mapping.is_active


def test_a_mapping_paused_after_failed_runs_says_why_and_can_be_resumed(api, make_mapping, make_connection):
    down = make_connection("Down", faults={"expired_credentials": True})
    mapping = make_mapping(target=down, pause_after_failed_runs=2)
    seed_records(mapping.source_connection, "contacts", [person(1)])
    run_mapping(mapping)
    run_mapping(mapping)

    shown = api.get(url(mapping)).json()

    assert shown["is_active"] is False and "Paused after 2 failed runs" in shown["paused_reason"]
    assert api.patch(url(mapping), {"is_active": True}, format="json").json()["paused_reason"] == ""
