"""The mapping pages with Django's test client: the list, the editor (saving through the service, its errors at
the right field or row, nothing typed lost, the live preview), the detail page and its actions; tenancy, roles
and query bounds."""

import pytest
from django.urls import reverse

from accounts.models import Membership, Role
from mappings.models import Mapping
from syncs.models import RunStatus, SyncRun

ZERO = "00000000-0000-0000-0000-000000000000"


@pytest.fixture
def viewer(org, django_user_model):
    user = django_user_model.objects.create_user("victor", "victor@example.org", "victor-password")
    Membership.objects.create(user=user, organization=org, role=Role.VIEWER)
    return user


def editor_data(source, target, **overrides):
    """What the editor posts for a contacts → contacts mapping with one row and its defaults."""
    data = {
        "name": "Shop → CRM", "source_connection": source.pk, "source_object": "contacts",
        "target_connection": target.pk, "target_object": "contacts", "direction": "one_way",
        "conflict_policy": "source_wins", "write_mode": "upsert", "create_if_missing": "on",
        "error_strategy": "retry", "retry_schedule": "60, 300, 1800", "max_retries": "3", "replay_attempts": "3",
        "pause_after_failed_runs": "5", "default_phone_country": "US", "logging_level": "errors",
        "batch_size": "100", "schedule_type": "none", "schedule_interval_minutes": "", "schedule_cron": "",
        "fm-0-source_field": "email", "fm-0-target_field": "email", "fm-0-t-0-name": "trim",
        "fm-0-t-1-name": "lowercase", "fm-0-default_value": "", "fm-0-sample": "", "fm-0-reverse_transforms": "[]",
        "mk-0-source": "email", "mk-0-target": "email", "editor": "save",
    }
    data.update(overrides)
    return data


def test_pages_send_anonymous_visitors_to_the_login(client, make_mapping):
    mapping = make_mapping()
    for url in (reverse("mappings:list"), reverse("mappings:new"), reverse("mappings:detail", args=[mapping.code]),
                reverse("mappings:edit", args=[mapping.code]), reverse("mappings:delete", args=[mapping.code])):
        response = client.get(url)
        assert response.status_code == 302 and response.url.startswith(reverse("login")), url


def test_the_list_shows_each_mapping_its_status_schedule_last_run_and_strategy(client, alice, org, history_of):
    contacts, companies = history_of(org, "Acme")
    Mapping.objects.filter(pk=contacts.pk).update(schedule_type="interval", schedule_interval_minutes=15)
    client.force_login(alice)

    page = client.get(reverse("mappings:list")).content.decode()

    assert "Acme contacts" in page and "Acme companies" in page
    assert "Acme shop" in page and "Acme CRM" in page and "Every 15 min" in page
    assert "Paused after 3 failed runs in a row" in page  # companies is paused, with its reason
    assert "Running" in page  # contacts' last run
    assert "Skip and continue" in page
    assert reverse("mappings:detail", args=[companies.code]) in page
    assert reverse("mappings:new") in page


def test_the_list_of_a_new_organization_leads_to_connections_first(client, alice, make_connection):
    client.force_login(alice)

    none = client.get(reverse("mappings:list")).content.decode()
    make_connection("Shop")
    make_connection("CRM")
    two = client.get(reverse("mappings:list")).content.decode()

    assert "No mapping yet" in none and reverse("connections:list") in none and "has\n    0." in none
    assert reverse("mappings:new") in two and "Go to connections" not in two


def test_the_list_shows_nothing_of_another_organization(client, alice, org, other_org, history_of):
    history_of(org, "Acme")
    history_of(other_org, "Globex")
    client.force_login(alice)

    page = client.get(reverse("mappings:list")).content.decode()

    assert "Acme contacts" in page and "Globex" not in page


def test_the_list_and_detail_queries_stay_bounded(client, alice, org, history_of, django_assert_max_num_queries):
    mappings = history_of(org, "Acme", failed_records=10)
    history_of(org, "Acme more")
    client.force_login(alice)

    with django_assert_max_num_queries(8):
        assert client.get(reverse("mappings:list")).status_code == 200
    with django_assert_max_num_queries(10):
        assert client.get(reverse("mappings:detail", args=[mappings[0].code])).status_code == 200


def test_creating_a_mapping_saves_it_through_the_service_with_its_rows_and_match_keys(client, alice,
                                                                                    make_connection):
    shop, crm = make_connection("Shop"), make_connection("CRM")
    client.force_login(alice)

    response = client.post(reverse("mappings:new"), editor_data(shop, crm, **{
        "fm-1-source_field": "first_name", "fm-1-target_field": "first_name", "fm-1-t-0-name": "truncate",
        "fm-1-t-0-length": "20", "fm-1-required": "on", "fm-1-default_value": "Unknown", "fm-1-skip_invalid": "on",
        "rp-timeout-retry": "yes", "rp-timeout-attempts": "5", "rp-validation-retry": "no",
        "schedule_type": "interval", "schedule_interval_minutes": "30",
    }))

    mapping = Mapping.objects.get(name="Shop → CRM")
    assert response.status_code == 302 and response.url == reverse("mappings:detail", args=[mapping.code])
    rows = list(mapping.field_mappings.values("source_field", "target_field", "transforms", "required",
                                              "default_value", "skip_invalid"))
    assert rows == [
        {"source_field": "email", "target_field": "email", "transforms": [
            {"name": "trim", "args": {}}, {"name": "lowercase", "args": {}}], "required": False,
         "default_value": None, "skip_invalid": False},
        {"source_field": "first_name", "target_field": "first_name", "transforms": [
            {"name": "truncate", "args": {"length": 20}}], "required": True, "default_value": "Unknown",
         "skip_invalid": True},
    ]
    assert mapping.match_keys == [{"source": "email", "target": "email"}]
    assert mapping.retry_policy == {"timeout": {"retry": True, "attempts": 5}, "validation": {"retry": False}}
    assert (mapping.schedule_type, mapping.schedule_interval_minutes, mapping.batch_size) == ("interval", 30, 100)


def test_the_editor_offers_the_objects_and_fields_of_the_chosen_connections(client, alice, make_mapping):
    mapping = make_mapping()
    client.force_login(alice)

    page = client.get(reverse("mappings:edit", args=[mapping.code])).content.decode()

    assert '<select name="source_object"' in page and '<option value="contacts" selected>' in page
    assert '<select name="fm-0-source_field" id="fm-0-source_field"' in page
    assert '<option value="email" selected>' in page
    assert 'value="trim" selected' in page


def test_service_errors_land_at_their_field_and_row_and_nothing_typed_is_lost(client, alice, make_connection):
    shop, crm = make_connection("Shop"), make_connection("CRM")
    client.force_login(alice)

    response = client.post(reverse("mappings:new"), editor_data(shop, crm, **{
        "schedule_type": "cron", "schedule_cron": "not a cron",
        "fm-0-t-1-name": "truncate", "fm-0-t-1-length": "-3", "fm-0-sample": "Alice@Example.com ",
        "fm-1-source_field": "first_name", "fm-1-target_field": "email",
    }))

    assert response.status_code == 200
    assert not Mapping.objects.exists()
    editor = response.context["editor"]
    assert "schedule_cron" in editor.form.errors
    assert editor.rows[0].errors["transforms"] == [
        "Transform 2: truncate: length must be a whole number above 0, got -3"]
    assert "already written by field_mappings[0]" in editor.rows[1].errors["target_field"][0]
    page = response.content.decode()
    assert "not a cron" in page and 'value="-3"' in page and 'value="Alice@Example.com "' in page
    assert "The mapping was not saved" in page


def test_a_form_error_shows_the_rows_problems_too(client, alice, make_connection):
    shop, crm = make_connection("Shop"), make_connection("CRM")
    client.force_login(alice)

    response = client.post(reverse("mappings:new"), editor_data(shop, crm, batch_size="5000", **{
        "fm-0-t-0-name": "nonsense", "rp-timeout-attempts": "many"}))

    editor = response.context["editor"]
    assert "batch_size" in editor.form.errors
    assert "unknown transform" in editor.rows[0].errors["transforms"][0]
    assert editor.errors["retry_policy"] == ["Timeout: attempts must be a whole number."]


def test_editor_buttons_add_and_remove_rows_and_transforms_without_saving(client, alice, make_connection):
    shop, crm = make_connection("Shop"), make_connection("CRM")
    client.force_login(alice)
    url = reverse("mappings:new")

    added = client.post(url, editor_data(shop, crm, editor="add_row"), headers={"HX-Request": "true"})
    transform = client.post(url, editor_data(shop, crm, editor="add_transform:0"))
    removed = client.post(url, editor_data(shop, crm, editor="remove_transform:0:0"))
    no_row = client.post(url, editor_data(shop, crm, editor="remove_row:0"))

    assert not Mapping.objects.exists()
    assert len(added.context["editor"].rows) == 2 and added.context["editor"].focus == "fm-1-source_field"
    assert [step.name for step in transform.context["editor"].rows[0].transforms] == ["trim", "lowercase", "trim"]
    assert [step.name for step in removed.context["editor"].rows[0].transforms] == ["lowercase"]
    assert no_row.context["editor"].rows == []


def test_the_live_preview_runs_the_engines_plan_on_the_sample(client, alice, make_connection):
    shop, crm = make_connection("Shop"), make_connection("CRM")
    client.force_login(alice)
    url = reverse("mappings:preview")

    ok = client.post(url, editor_data(shop, crm, preview_row="0", **{"fm-0-sample": "  Alice@Example.COM "}))
    bad = client.post(url, editor_data(shop, crm, preview_row="0", **{
        "fm-0-t-0-name": "email_normalize", "fm-0-sample": "olivia@example"}))
    concat = client.post(url, editor_data(shop, crm, preview_row="1", **{
        "fm-0-sample": "ada@example.com", "fm-1-source_field": "first_name", "fm-1-target_field": "company",
        "fm-1-sample": "Ada", "fm-1-t-0-name": "concat", "fm-1-t-0-fields": "email",
        "fm-1-t-0-include_value": "on", "fm-1-t-0-separator": " / "}))
    invalid = client.post(url, editor_data(shop, crm, preview_row="0", **{
        "fm-0-t-0-name": "truncate", "fm-0-t-0-length": "x", "fm-0-sample": "abc"}))

    assert "<html" not in ok.content.decode()
    assert "“alice@example.com”" in ok.content.decode()
    assert "Fails" in bad.content.decode() and "not a valid email address" in bad.content.decode()
    assert "“Ada / ada@example.com”" in concat.content.decode()
    assert "length must be a whole number" in invalid.content.decode()
    assert client.post(url, editor_data(shop, crm, preview_row="7")).status_code == 400


def test_editing_keeps_the_reverse_transforms_and_filters_it_does_not_show(client, alice, make_mapping):
    mapping = make_mapping(filters=[{"field": "email", "op": "empty", "reason": "No email"}])
    mapping.field_mappings.filter(target_field="email").update(reverse_transforms=[{"name": "trim", "args": {}}])
    client.force_login(alice)
    page = client.get(reverse("mappings:edit", args=[mapping.code]))
    editor = page.context["editor"]
    assert [row.target_field for row in editor.rows] == ["email", "first_name", "last_name", "phone"]

    data = editor_data(mapping.source_connection, mapping.target_connection, name=mapping.name, **{
        "fm-0-reverse_transforms": editor.rows[0].reverse_transforms})
    response = client.post(reverse("mappings:edit", args=[mapping.code]), data)

    assert response.status_code == 302
    mapping.refresh_from_db()
    assert mapping.filters == [{"field": "email", "op": "empty", "reason": "No email"}]
    assert list(mapping.field_mappings.values_list("reverse_transforms", flat=True)) == [[{"name": "trim", "args": {}}]]


def test_the_detail_shows_settings_fields_and_runs(client, alice, org, history_of):
    contacts = history_of(org, "Acme")[0]
    client.force_login(alice)

    page = client.get(reverse("mappings:detail", args=[contacts.code])).content.decode()

    assert "Acme contacts" in page and "email" in page and "trim" in page
    assert "Partially failed" in page and reverse("run_detail", args=[SyncRun.objects.filter(
        mapping=contacts).first().code]) in page
    assert "A run is running now" in page  # the run in progress: "Run now" will not queue another


def test_validate_lists_the_problems_against_the_schemas(client, viewer, make_mapping):
    mapping = make_mapping(fields=("email", "nickname"))
    client.force_login(viewer)

    response = client.get(reverse("mappings:validate", args=[mapping.code]), headers={"HX-Request": "true"})

    page = response.content.decode()
    assert response.status_code == 200 and "<html" not in page
    assert "nickname does not exist" in page


def test_test_sync_shows_the_planned_action_per_record_and_writes_nothing(client, alice, make_mapping,
                                                                           make_connection):
    from integrations.connectors.sandbox import seed_records

    shop = make_connection("Shop")
    seed_records(shop, "contacts", [{"email": "ada@example.com", "first_name": "Ada", "last_name": "Lovelace"},
                                    {"email": "bad", "first_name": "Bob", "last_name": "Brown"}])
    mapping = make_mapping(source=shop, transforms={"email": [{"name": "email_normalize"}]})
    client.force_login(alice)

    response = client.post(reverse("mappings:test_sync", args=[mapping.code]), headers={"HX-Request": "true"})

    page = response.content.decode()
    assert "<html" not in page
    assert "badge-plan-create" in page and "badge-plan-failed" in page
    assert "ada@example.com" in page and "not a valid email address" in page
    assert not mapping.links.exists()


def test_run_now_queues_a_run_and_says_when_one_is_already_active(client, alice, make_mapping):
    mapping = make_mapping()
    client.force_login(alice)
    SyncRun.objects.create(organization=mapping.organization, mapping=mapping, status=RunStatus.RUNNING)

    response = client.post(reverse("mappings:run", args=[mapping.code]), follow=True)

    assert "already queued or running" in response.content.decode()
    assert SyncRun.objects.filter(mapping=mapping).count() == 1


def test_run_now_queues_a_manual_run(client, alice, make_mapping, monkeypatch):
    mapping = make_mapping()
    client.force_login(alice)
    monkeypatch.setattr("syncs.services.transaction.on_commit", lambda callback: None)  # leave it queued

    response = client.post(reverse("mappings:run", args=[mapping.code]), follow=True)

    assert "is queued" in response.content.decode()
    assert SyncRun.objects.get(mapping=mapping).trigger == "manual"


def test_pause_needs_a_reason_and_resume_brings_it_back(client, alice, make_mapping):
    mapping = make_mapping()
    client.force_login(alice)
    detail = reverse("mappings:detail", args=[mapping.code])

    refused = client.post(reverse("mappings:pause", args=[mapping.code]), {"reason": " "}, follow=True)
    mapping.refresh_from_db()
    assert mapping.is_active and "Say why" in refused.content.decode()

    client.post(reverse("mappings:pause", args=[mapping.code]), {"reason": "CRM maintenance"})
    mapping.refresh_from_db()
    assert not mapping.is_active and mapping.paused_reason == "CRM maintenance"

    response = client.post(reverse("mappings:resume", args=[mapping.code]), {"next": detail})
    mapping.refresh_from_db()
    assert mapping.is_active and response.url == detail
    # From the overview (its route, the same view) it goes back there.
    from_overview = client.post(reverse("mappings:resume", args=[mapping.code]), headers={"referer": "/"})
    assert from_overview.url == "/"
    offsite = client.post(reverse("mappings:resume", args=[mapping.code]), {"next": "https://evil.example/"})
    assert offsite.url == detail


def test_delete_asks_first_and_says_why_it_refuses(client, alice, make_mapping):
    mapping, busy = make_mapping(), make_mapping()
    SyncRun.objects.create(organization=busy.organization, mapping=busy, status=RunStatus.RUNNING)
    client.force_login(alice)

    confirm = client.get(reverse("mappings:delete", args=[mapping.code])).content.decode()
    refused = client.post(reverse("mappings:delete", args=[busy.code]), follow=True).content.decode()
    deleted = client.post(reverse("mappings:delete", args=[mapping.code]))

    assert "This cannot be undone" in confirm
    assert "is queued or running" in refused and Mapping.objects.filter(pk=busy.pk).exists()
    assert deleted.url == reverse("mappings:list") and not Mapping.objects.filter(pk=mapping.pk).exists()


def test_a_viewer_sees_the_pages_but_cannot_act(client, viewer, make_mapping):
    mapping = make_mapping()
    client.force_login(viewer)

    listing = client.get(reverse("mappings:list")).content.decode()
    detail = client.get(reverse("mappings:detail", args=[mapping.code])).content.decode()

    assert mapping.name in listing and reverse("mappings:new") not in listing
    for hidden in ("run", "edit", "pause", "delete", "test_sync"):
        assert reverse(f"mappings:{hidden}", args=[mapping.code]) not in detail
    assert client.get(reverse("mappings:new")).status_code == 403
    assert client.get(reverse("mappings:edit", args=[mapping.code])).status_code == 403
    assert client.get(reverse("mappings:delete", args=[mapping.code])).status_code == 403
    for action in ("run", "pause", "resume", "delete", "test_sync", "edit"):
        assert client.post(reverse(f"mappings:{action}", args=[mapping.code]), {"reason": "x"}).status_code == 403
    assert client.post(reverse("mappings:new"), {}).status_code == 403
    assert client.post(reverse("mappings:preview"), {}).status_code == 403
    mapping.refresh_from_db()
    assert mapping.is_active and not SyncRun.objects.exists()


@pytest.mark.parametrize("name", ["detail", "edit", "validate", "delete"])
def test_another_organizations_mapping_answers_404_on_every_page(client, alice, other_org, make_mapping, name):
    theirs = make_mapping(organization=other_org)
    client.force_login(alice)

    assert client.get(reverse(f"mappings:{name}", args=[theirs.code])).status_code == 404
    assert client.get(reverse(f"mappings:{name}", args=[ZERO])).status_code == 404


@pytest.mark.parametrize("name", ["run", "pause", "resume", "delete", "test_sync", "edit"])
def test_another_organizations_mapping_answers_404_on_every_action(client, alice, other_org, make_mapping, name):
    theirs = make_mapping(organization=other_org)
    client.force_login(alice)

    assert client.post(reverse(f"mappings:{name}", args=[theirs.code]), {"reason": "x"}).status_code == 404
    theirs.refresh_from_db()
    assert theirs.is_active and not SyncRun.objects.exists()


def test_the_editor_offers_only_the_organizations_connections(client, alice, make_connection, other_org):
    ours = make_connection("Our shop")
    theirs = make_connection("Their ERP", organization=other_org)
    client.force_login(alice)

    page = client.get(reverse("mappings:new")).content.decode()
    response = client.post(reverse("mappings:new"), editor_data(ours, theirs))

    assert "Our shop" in page and "Their ERP" not in page
    assert "target_connection" in response.context["editor"].form.errors
    assert not Mapping.objects.exists()


def test_actions_are_posts(client, alice, make_mapping):
    mapping = make_mapping()
    client.force_login(alice)

    for action in ("run", "pause", "resume", "test_sync"):
        assert client.get(reverse(f"mappings:{action}", args=[mapping.code])).status_code == 405
