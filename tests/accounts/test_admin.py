import pytest
from django.apps import apps
from django.contrib import admin
from django.urls import reverse
from django.utils import timezone

from accounts.models import Membership
from integrations.models import Connection, SandboxCallCounter, SandboxRecord
from mappings.models import FieldMapping, Mapping
from syncs.models import ErrorLevel, ErrorStatus, RecordError, RecordLink, RunStatus, SyncBatch, SyncRun, Trigger

SECRET = "sk_live_never_show_me_7c1d"


def make_run(mapping, **fields):
    return SyncRun.objects.create(organization=mapping.organization, mapping=mapping, **fields)


def make_error(run, n=1, **fields):
    values = {
        "category": "validation",
        "error_code": "invalid_email",
        "message": f"email is not a valid email address: record {n}",
        "source_record_id": f"ct_{n:04d}",
        "fingerprint": "f" * 40,
        "snapshot_before": {"email": "jane@", "first_name": "Jane"},
        "snapshot_after": {"email": "jane@", "first_name": "Jane"},
        **fields,
    }
    return RecordError.objects.create(organization=run.organization, run=run, mapping=run.mapping, **values)


@pytest.fixture
def world(org, alice, make_mapping):
    """One row of every model the admin shows, all in acme."""
    mapping = make_mapping()
    root = make_run(mapping, status=RunStatus.PARTIALLY_FAILED, trigger=Trigger.MANUAL, read=3, failed=1)
    child = make_run(mapping, status=RunStatus.SUCCEEDED, trigger=Trigger.RETRY, parent=root, root=root)
    batch = SyncBatch.objects.create(organization=org, run=root, sequence=1, record_count=3)
    error = make_error(root, batch=batch)
    link = RecordLink.objects.create(
        organization=org, mapping=mapping, source_record_id="ct_0001", target_record_id="ct_9", last_error=error
    )
    record = SandboxRecord.objects.create(
        organization=org,
        connection=mapping.source_connection,
        object_name="contacts",
        external_id="ct_0001",
        data={"email": "jane@"},
        modified_at=timezone.now(),
    )
    counter = SandboxCallCounter.objects.create(connection=mapping.target_connection, calls=4)
    return {
        "organization": org,
        "membership": Membership.objects.get(user=alice),
        "connection": mapping.source_connection,
        "sandboxrecord": record,
        "sandboxcallcounter": counter,
        "mapping": mapping,
        "fieldmapping": mapping.field_mappings.first(),
        "syncrun": root,
        "child_run": child,
        "syncbatch": batch,
        "recorderror": error,
        "recordlink": link,
    }


ADMIN_MODELS = [
    "organization",
    "membership",
    "connection",
    "sandboxrecord",
    "sandboxcallcounter",
    "mapping",
    "fieldmapping",
    "syncrun",
    "syncbatch",
    "recorderror",
    "recordlink",
]


def admin_url(obj, view="change"):
    meta = obj._meta
    if view == "change":
        return reverse(f"admin:{meta.app_label}_{meta.model_name}_change", args=[obj.pk])
    return reverse(f"admin:{meta.app_label}_{meta.model_name}_{view}")


def test_every_model_of_the_apps_is_registered():
    for label in ("accounts", "integrations", "mappings", "syncs"):
        for model in apps.get_app_config(label).get_models():
            assert admin.site.is_registered(model), f"{model.__name__} is not in the admin"


@pytest.mark.parametrize("name", ADMIN_MODELS)
def test_changelist_search_and_change_view_load(admin_client, world, name):
    obj = world[name]

    assert admin_client.get(admin_url(obj, "changelist")).status_code == 200
    assert admin_client.get(admin_url(obj, "changelist"), {"q": "jane"}).status_code == 200
    assert admin_client.get(admin_url(obj)).status_code == 200


def test_history_is_read_only_in_the_admin(admin_client, world):
    assert admin_client.get(admin_url(world["syncrun"], "add")).status_code == 403
    assert admin_client.get(admin_url(world["recorderror"], "add")).status_code == 403

    response = admin_client.post(admin_url(world["recorderror"]), {"status": ErrorStatus.RESOLVED})

    assert response.status_code == 403
    world["recorderror"].refresh_from_db()
    assert world["recorderror"].status == ErrorStatus.OPEN


def test_sync_run_page_links_its_retry_chain_and_record_errors(admin_client, world):
    root, child = world["syncrun"], world["child_run"]

    root_page = admin_client.get(admin_url(root)).content.decode()
    child_page = admin_client.get(admin_url(child)).content.decode()

    assert admin_url(child) in root_page
    assert f"?run__id__exact={root.pk}" in root_page
    assert child_page.count(admin_url(root)) >= 2  # parent and root
    errors_of_run = admin_client.get(admin_url(world["recorderror"], "changelist"), {"run__id__exact": root.pk})
    assert errors_of_run.status_code == 200
    assert world["recorderror"].source_record_id in errors_of_run.content.decode()


def test_record_error_page_shows_snapshots_as_pretty_json(admin_client, world):
    response = admin_client.get(admin_url(world["recorderror"]))

    assert "<pre>{\n  &quot;email&quot;: &quot;jane@&quot;,\n  &quot;first_name&quot;" in response.content.decode()


@pytest.mark.parametrize("name", ["recorderror", "syncrun"])
def test_changelists_do_not_query_per_row(admin_client, world, name, django_assert_max_num_queries):
    # Rows in several mappings and runs: a missing select_related would cost a query per row.
    for n in range(3):
        mapping = Mapping.objects.create(
            organization=world["organization"],
            name=f"Extra {n}",
            source_connection=world["connection"],
            source_object="contacts",
            target_connection=world["mapping"].target_connection,
            target_object="contacts",
        )
        for _ in range(5):
            run = make_run(mapping, status=RunStatus.FAILED)
            for m in range(3):
                make_error(run, n=m, level=ErrorLevel.RECORD)

    with django_assert_max_num_queries(12):
        response = admin_client.get(admin_url(world[name], "changelist"))

    assert response.status_code == 200


def connection_form(org, **overrides):
    data = {
        "organization": org.pk,
        "name": "HubSpot production",
        "provider": "sandbox",
        "config": "{}",
        "status": "active",
        "status_reason": "",
        "max_concurrency": 4,
        "new_credentials": "",
    }
    data.update(overrides)
    return data


def test_new_credentials_are_stored_encrypted(admin_client, org):
    response = admin_client.post(
        admin_url(Connection, "add"), connection_form(org, new_credentials=f'{{"api_key": "{SECRET}"}}')
    )

    assert response.status_code == 302
    connection = Connection.objects.get(name="HubSpot production")
    assert connection.credentials == {"api_key": SECRET}
    assert SECRET not in connection.credentials_ciphertext


def test_connection_pages_never_show_credentials(admin_client, make_connection):
    connection = make_connection("CRM", api_key=SECRET)

    change_page = admin_client.get(admin_url(connection)).content.decode()
    list_page = admin_client.get(admin_url(connection, "changelist")).content.decode()

    for page in (change_page, list_page):
        assert SECRET not in page
        assert connection.credentials_ciphertext not in page
    assert "New credentials (JSON object)" in change_page
    assert "Credentials set" in change_page


def test_empty_new_credentials_keep_the_current_ones(admin_client, make_connection):
    connection = make_connection("CRM", api_key=SECRET)

    response = admin_client.post(
        admin_url(connection), connection_form(connection.organization, name="CRM renamed", config="{}")
    )

    assert response.status_code == 302
    connection.refresh_from_db()
    assert connection.name == "CRM renamed"
    assert connection.credentials == {"api_key": SECRET}


@pytest.mark.parametrize(
    ("typed", "message"),
    [
        (f'{{"api_key": "{SECRET}"', "Enter valid JSON."),
        (f'["{SECRET}"]', "Enter a JSON object"),
    ],
)
def test_credentials_that_are_not_a_json_object_are_refused_without_echoing_them(admin_client, org, typed, message):
    response = admin_client.post(admin_url(Connection, "add"), connection_form(org, new_credentials=typed))

    assert response.status_code == 200
    page = response.content.decode()
    assert message in page
    assert SECRET not in page
    assert not Connection.objects.exists()


def test_run_now_queues_a_run_of_each_selected_mapping(admin_client, make_mapping):
    first, second = make_mapping(), make_mapping()

    response = admin_client.post(
        admin_url(Mapping, "changelist"),
        {"action": "run_now", "_selected_action": [first.pk, second.pk]},
        follow=True,
    )

    runs = SyncRun.objects.order_by("mapping_id")
    assert [(run.mapping, run.trigger, run.status) for run in runs] == [
        (first, Trigger.MANUAL, RunStatus.QUEUED),
        (second, Trigger.MANUAL, RunStatus.QUEUED),
    ]
    assert "2 runs queued." in response.content.decode()


def test_run_now_says_when_a_mapping_is_already_running(admin_client, make_mapping):
    mapping = make_mapping()
    make_run(mapping, status=RunStatus.RUNNING)

    response = admin_client.post(
        admin_url(Mapping, "changelist"), {"action": "run_now", "_selected_action": [mapping.pk]}, follow=True
    )

    assert SyncRun.objects.count() == 1
    assert "0 runs queued. 1 mapping already had a run queued or running." in response.content.decode()


def mapping_form(org, source, target, **overrides):
    data = {
        "organization": org.pk,
        "name": "Contacts",
        "is_active": "on",
        "paused_reason": "",
        "source_connection": source.pk,
        "source_object": "contacts",
        "target_connection": target.pk,
        "target_object": "contacts",
        "direction": "one_way",
        "match_keys": '[{"source": "email", "target": "email"}]',
        "write_mode": "upsert",
        "create_if_missing": "on",
        "conflict_policy": "source_wins",
        "filters": "[]",
        "error_strategy": "skip",
        "retry_schedule": "[60, 300, 1800]",
        "max_retries": "3",
        "replay_attempts": "3",
        "default_phone_country": "US",
        "logging_level": "errors",
        "schedule_type": "none",
        "schedule_interval_minutes": "",
        "schedule_cron": "",
        "field_mappings-TOTAL_FORMS": "1",
        "field_mappings-INITIAL_FORMS": "0",
        "field_mappings-0-position": "0",
        "field_mappings-0-source_field": "email",
        "field_mappings-0-target_field": "email",
        "field_mappings-0-transforms": '[{"name": "trim", "args": {}}]',
        "field_mappings-0-reverse_transforms": "[]",
        "field_mappings-0-default_value": "",
    }
    data.update(overrides)
    return data


def test_a_mapping_added_in_the_admin_keeps_its_field_mappings_in_its_organization(admin_client, org, make_connection):
    source, target = make_connection("Shop"), make_connection("CRM")

    response = admin_client.post(admin_url(Mapping, "add"), mapping_form(org, source, target))

    assert response.status_code == 302
    field_mapping = FieldMapping.objects.get()
    assert field_mapping.organization == org
    assert field_mapping.mapping.organization == org


def test_a_mapping_cannot_use_another_organizations_connection(admin_client, org, other_org, make_connection):
    source, foreign = make_connection("Shop"), make_connection("Globex CRM", organization=other_org)

    response = admin_client.post(admin_url(Mapping, "add"), mapping_form(org, source, foreign))

    assert response.status_code == 200
    assert "belongs to another organization" in response.content.decode()
    assert not Mapping.objects.exists()


def test_an_unknown_transform_is_refused(admin_client, org, make_connection):
    source, target = make_connection("Shop"), make_connection("CRM")
    data = mapping_form(org, source, target, **{"field_mappings-0-transforms": '[{"name": "titlecase"}]'})

    response = admin_client.post(admin_url(Mapping, "add"), data)

    assert response.status_code == 200
    assert "unknown transform" in response.content.decode()
    assert not Mapping.objects.exists()


def test_a_secret_looking_config_key_is_refused_as_in_the_api(admin_client, org):
    response = admin_client.post(
        admin_url(Connection, "add"), connection_form(org, config=f'{{"api_key": "{SECRET}"}}')
    )

    assert response.status_code == 200
    assert "config.api_key looks like a secret" in response.content.decode()
    assert not Connection.objects.exists()


def test_a_schedule_set_in_the_admin_is_scheduled_and_removed_with_the_mapping(admin_client, org, make_connection):
    from django_q.models import Schedule

    source, target = make_connection("Shop"), make_connection("CRM")

    response = admin_client.post(
        admin_url(Mapping, "add"),
        mapping_form(org, source, target, schedule_type="interval", schedule_interval_minutes="15"),
    )

    assert response.status_code == 302
    mapping = Mapping.objects.get()
    schedule = Schedule.objects.get(name=f"mapping-{mapping.pk}")
    assert (schedule.func, schedule.minutes) == ("syncs.tasks.run_scheduled_mapping", 15)

    data = mapping_form(org, source, target, schedule_type="interval", schedule_interval_minutes="15")
    data.pop("is_active")  # unchecked: paused
    data.update({"field_mappings-INITIAL_FORMS": "1", "field_mappings-0-id": mapping.field_mappings.get().pk,
                 "field_mappings-0-mapping": mapping.pk})
    response = admin_client.post(admin_url(mapping), data)

    assert response.status_code == 302
    assert not Schedule.objects.filter(name=f"mapping-{mapping.pk}").exists()

    admin_client.post(admin_url(mapping), {**data, "is_active": "on"})
    assert Schedule.objects.filter(name=f"mapping-{mapping.pk}").exists()
    response = admin_client.post(reverse("admin:mappings_mapping_delete", args=[mapping.pk]), {"post": "yes"})

    assert response.status_code == 302
    assert not Mapping.objects.exists()
    assert not Schedule.objects.filter(name=f"mapping-{mapping.pk}").exists()


def test_a_revoked_token_cannot_be_brought_back_in_the_admin(admin_client, org):
    from accounts.models import ApiToken
    from accounts.services import api_token_authenticate, api_token_create, api_token_revoke

    token, plain = api_token_create(organization=org, name="leaked", role="admin")
    api_token_revoke(token=token)

    admin_client.post(admin_url(token), {"name": "leaked", "role": "admin", "revoked_at_0": "", "revoked_at_1": ""})

    assert ApiToken.objects.get(pk=token.pk).revoked_at is not None
    assert api_token_authenticate(plain) is None


def test_a_tokens_role_and_existence_are_not_changed_in_the_admin_as_in_the_api(admin_client, org):
    from accounts.models import ApiToken
    from accounts.services import api_token_create

    token, _plain = api_token_create(organization=org, name="ci", role="viewer")

    admin_client.post(admin_url(token), {"name": "ci", "role": "admin"})
    delete = admin_client.post(reverse("admin:accounts_apitoken_delete", args=[token.pk]), {"post": "yes"})

    assert delete.status_code == 403
    assert ApiToken.objects.get(pk=token.pk).role == "viewer"


def test_the_mapping_admin_refuses_malformed_json_settings_like_the_api(admin_client, org, make_connection):
    source, target = make_connection("Shop"), make_connection("CRM")
    data = mapping_form(org, source, target, match_keys='[{"source": "email"}]', schedule_type="cron",
                        schedule_cron="not a cron")

    response = admin_client.post(admin_url(Mapping, "add"), data)

    assert response.status_code == 200
    page = response.content.decode()
    assert "match_keys[0]" in page and "schedule_cron" in page
    assert not Mapping.objects.exists()
