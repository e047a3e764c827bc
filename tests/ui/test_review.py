"""The review queue with Django's test client: the queue (oldest first, by mapping, keyset pages, its empty
states), one record's correction form described by the target's schema, Save and retry through
error_edit_and_retry (the schema's refusals next to each input, nothing typed lost), the outcome of the retry,
ignore with a reason; tenancy (another organization's record answers 404 on every page and action), viewers
(403 on every action) and a query count that does not grow with the queue."""

import uuid

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from accounts.models import Membership, Role
from integrations.connectors.sandbox import seed_records
from syncs.models import ErrorLevel, ErrorStatus, RecordError, Resolution
from tests.syncs.helpers import person, records, run_mapping

UNKNOWN = uuid.UUID(int=0)


@pytest.fixture
def viewer(org, django_user_model):
    user = django_user_model.objects.create_user("victor", "victor@example.org", "victor-password")
    Membership.objects.create(user=user, organization=org, role=Role.VIEWER)
    return user


def review_mapping_of(make_mapping, count=2, *, organization=None, **options):
    """A manual-review mapping whose `count` records failed validation (an empty last name) and wait."""
    mapping = make_mapping(error_strategy="manual_review", organization=organization, **options)
    seed_records(mapping.source_connection, "contacts",
                 [person(n, last_name="") for n in range(1, count + 1)])
    run_mapping(mapping)
    return mapping


@pytest.fixture
def review_mapping(make_mapping):
    return review_mapping_of(make_mapping)


def in_review(mapping):
    return list(RecordError.objects.filter(mapping=mapping, status=ErrorStatus.IN_REVIEW).order_by("created_at", "pk"))


def values(error, **changes):
    """The form's POST: the error's transformed values as the inputs show them, with `changes`."""
    shown = {key: "" if value is None else str(value) for key, value in (error.snapshot_after or {}).items()}
    shown.update(changes)
    return {f"value-{key}": value for key, value in shown.items()}


# --- the queue --------------------------------------------------------------------------------------------------


def test_the_queue_lists_records_in_review_oldest_first_with_their_problem(client, alice, review_mapping,
                                                                            make_mapping, failing_target):
    # Errors of a mapping that skips its failures are not in review: they are not listed.
    other = make_mapping(target=failing_target, match_keys=[])
    seed_records(other.source_connection, "contacts", [person(9)])
    run_mapping(other)
    client.force_login(alice)

    response = client.get(reverse("review_queue"))

    assert response.status_code == 200
    rows = response.context["page"].rows
    assert rows == in_review(review_mapping)
    page = response.content.decode()
    assert "last_name is required" in page and review_mapping.name in page
    assert reverse("review_error", args=[rows[0].code]) in page
    assert "2 records wait" in page


def test_the_queue_filters_by_mapping_and_refuses_another_organizations_mapping(
        client, alice, org, other_org, make_mapping, review_mapping, make_connection):
    second = review_mapping_of(make_mapping, 1)
    theirs = review_mapping_of(make_mapping, 1, organization=other_org,
                               source=make_connection("Their shop", organization=other_org),
                               target=make_connection("Their CRM", organization=other_org))
    client.force_login(alice)

    mine = client.get(reverse("review_queue"), {"mapping": str(second.code)})
    assert mine.context["page"].rows == in_review(second)

    response = client.get(reverse("review_queue"), {"mapping": str(theirs.code)})
    assert response.status_code == 200
    assert "mapping" in response.context["filters"].errors
    assert response.context["page"].rows == []
    assert theirs.name not in response.content.decode()


def test_the_queue_pages_by_keyset_oldest_first(client, alice, make_mapping, monkeypatch):
    mapping = review_mapping_of(make_mapping, 5)
    monkeypatch.setattr("syncs.views.review.QUEUE_PAGE_SIZE", 2)
    client.force_login(alice)
    expected = in_review(mapping)

    seen, query = [], {}
    for _ in range(3):
        response = client.get(reverse("review_queue"), query)
        page = response.context["page"]
        seen.extend(page.rows)
        if not page.older:
            break
        query = {"after": page.older}
    assert seen == expected
    back = client.get(reverse("review_queue"), {"before": page.newer}).context["page"]
    assert back.rows == expected[2:4]


def test_an_empty_queue_says_what_puts_records_there(client, alice, make_mapping):
    client.force_login(alice)
    page = client.get(reverse("review_queue")).content.decode()
    assert "Nothing waits for review" in page and "Manual review" in page
    assert reverse("mappings:list") in page

    make_mapping(error_strategy="manual_review")
    page = client.get(reverse("review_queue")).content.decode()
    assert "Mappings that send their failures here" in page


# --- one record ----------------------------------------------------------------------------------------------------


def test_a_record_in_review_shows_one_input_per_field_described_by_the_target_schema(client, alice, review_mapping):
    error = in_review(review_mapping)[0]
    client.force_login(alice)

    response = client.get(reverse("review_error", args=[error.code]))

    assert response.status_code == 200
    form = response.context["form"]
    assert list(form.fields) == ["email", "first_name", "last_name", "phone"]
    assert form["email"].value() == error.snapshot_after["email"]
    page = response.content.decode()
    assert 'name="value-last_name"' in page and 'type="email"' in page
    assert "Last name" in page and "Required · Text · at most 40 characters" in page
    assert "Optional · Phone number" in page
    assert reverse("error_detail", args=[error.code]) in page


def test_the_error_detail_page_links_a_record_in_review_to_its_form(client, alice, review_mapping):
    error = in_review(review_mapping)[0]
    client.force_login(alice)

    page = client.get(reverse("error_detail", args=[error.code])).content.decode()

    assert reverse("review_error", args=[error.code]) in page


def test_invalid_values_are_refused_next_to_their_field_keeping_what_was_typed(client, alice, review_mapping):
    error = in_review(review_mapping)[0]
    client.force_login(alice)
    typed = values(error, email="not an email", first_name="Ann " + "n" * 45, last_name="")

    response = client.post(reverse("review_error", args=[error.code]), typed)

    assert response.status_code == 400
    form = response.context["form"]
    assert set(form.errors) == {"email", "first_name", "last_name"}
    assert "not a valid email address" in form.errors["email"][0]
    assert "the target allows 40" in form.errors["first_name"][0]
    assert "required" in form.errors["last_name"][0]
    # Nothing typed is lost: each input shows what was sent.
    assert form["email"].value() == "not an email"
    assert form["first_name"].value() == "Ann " + "n" * 45
    page = response.content.decode()
    assert 'value="not an email"' in page and 'aria-invalid="true"' in page
    error.refresh_from_db()
    assert error.status == ErrorStatus.IN_REVIEW and error.edited_payload is None


def test_typed_values_take_the_target_fields_type(rf):
    from integrations.connectors.base import FieldSpec, FieldType, ObjectSchema
    from syncs.review_forms import CorrectionForm

    schema = ObjectSchema("companies", {
        "name": FieldSpec("name", FieldType.STRING, required=True, max_length=80),
        "employee_count": FieldSpec("employee_count", FieldType.INTEGER),
        "revenue": FieldSpec("revenue", FieldType.NUMBER),
        "active": FieldSpec("active", FieldType.BOOLEAN),
        "notes": FieldSpec("notes", FieldType.TEXT),
    })
    payload = {"name": "Acme", "employee_count": "12 people", "revenue": 10, "active": "maybe", "notes": None}
    data = {"value-name": "Acme", "value-employee_count": "12", "value-revenue": "10", "value-active": "true",
            "value-notes": "", "value-extra": "x"}

    form = CorrectionForm(data, payload=payload, schema=schema)

    assert form.is_valid(), form.errors
    assert form.corrected_payload() == {"name": "Acme", "employee_count": 12, "revenue": 10, "active": True,
                                        "notes": None}
    assert ("maybe", "maybe") in form.fields["active"].choices  # the failing value is still shown
    again = CorrectionForm({**data, "value-employee_count": "twelve", "value-revenue": "1.5"}, payload=payload,
                           schema=schema)
    assert again.is_valid()
    assert again.corrected_payload()["employee_count"] == "twelve"  # left as typed: the service refuses it
    assert again.corrected_payload()["revenue"] == 1.5


def test_save_and_retry_writes_the_corrected_record_and_shows_it_synced(client, alice, review_mapping,
                                                                        django_capture_on_commit_callbacks):
    error = in_review(review_mapping)[0]
    client.force_login(alice)

    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(reverse("review_error", args=[error.code]), values(error, last_name="Corrected"))

    assert response.status_code == 302
    assert response.url.startswith(reverse("review_error", args=[error.code]) + "?run=")
    error.refresh_from_db()
    assert (error.status, error.resolution, error.edited_payload["last_name"]) == (
        ErrorStatus.RESOLVED, Resolution.FIXED, "Corrected")
    assert [record.data["last_name"] for record in records(review_mapping.target_connection)] == ["Corrected"]
    page = client.get(response.url)
    assert page.context["outcome"]["state"] == "synced"
    assert "Retried: synced" in page.content.decode()
    assert page.context["form"] is None  # nothing left to correct
    assert client.get(reverse("review_error", args=[error.code]), {"run": "not-a-run"}).status_code == 200
    assert in_review(review_mapping) != [] and error not in in_review(review_mapping)


def test_a_retry_that_fails_again_shows_the_reason_and_leads_to_the_record_back_in_review(
        client, alice, make_mapping, django_capture_on_commit_callbacks):
    mapping = review_mapping_of(make_mapping, 1)
    error = in_review(mapping)[0]
    # The target refuses every write from now on: the corrected record fails again, for another reason.
    target = mapping.target_connection
    target.config = {"faults": {"operations": ["write"], "failure_rate": 1.0, "failure_kind": "503"}}
    target.save()
    client.force_login(alice)

    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(reverse("review_error", args=[error.code]), values(error, last_name="Corrected"))

    page = client.get(response.url)
    outcome = page.context["outcome"]
    assert outcome["state"] == "failing"
    newer = outcome["newer"]
    assert newer.status == ErrorStatus.IN_REVIEW and newer.edited_payload["last_name"] == "Corrected"
    text = page.content.decode()
    assert "still failing" in text and newer.message in text
    assert reverse("review_error", args=[newer.code]) in text
    # The record's new error offers the correction again, as it was last saved.
    again = client.get(reverse("review_error", args=[newer.code]))
    assert again.context["form"]["last_name"].value() == "Corrected"


def test_the_outcome_partial_polls_while_the_retry_is_under_way(client, alice, review_mapping):
    error = in_review(review_mapping)[0]
    RecordError.objects.filter(pk=error.pk).update(status=ErrorStatus.RETRYING)
    client.force_login(alice)

    partial = client.get(reverse("review_error_outcome", args=[error.code]))

    assert partial.status_code == 200
    text = partial.content.decode()
    assert "Retrying" in text and 'hx-trigger="every 2s"' in text
    RecordError.objects.filter(pk=error.pk).update(status=ErrorStatus.RESOLVED, resolution=Resolution.FIXED)
    settled = client.get(reverse("review_error_outcome", args=[error.code])).content.decode()
    assert "Retried: synced" in settled and "hx-trigger" not in settled


def test_ignoring_needs_a_reason_then_closes_the_record(client, alice, review_mapping):
    error = in_review(review_mapping)[0]
    client.force_login(alice)

    blank = client.post(reverse("review_error_ignore", args=[error.code]), {"reason": "  "})
    assert blank.status_code == 400
    assert "reason" in blank.context["ignore_form"].errors

    done = client.post(reverse("review_error_ignore", args=[error.code]), {"reason": "A test customer"})
    assert done.status_code == 302 and done.url == reverse("review_queue")
    error.refresh_from_db()
    assert (error.status, error.resolution_note) == (ErrorStatus.IGNORED, "A test customer")
    assert error not in in_review(review_mapping)


def test_a_closed_record_is_not_edited_again(client, alice, review_mapping):
    error = in_review(review_mapping)[0]
    RecordError.objects.filter(pk=error.pk).update(status=ErrorStatus.IGNORED, resolution=Resolution.IGNORED)
    client.force_login(alice)

    response = client.post(reverse("review_error", args=[error.code]), values(error, last_name="Late"))

    assert response.status_code == 302
    error.refresh_from_db()
    assert error.edited_payload is None


# --- tenancy, roles, queries -----------------------------------------------------------------------------------


def test_another_organizations_record_answers_404_on_every_page_and_action(client, alice, other_org, make_mapping,
                                                                          make_connection):
    theirs = review_mapping_of(make_mapping, 1, organization=other_org,
                               source=make_connection("Their shop", organization=other_org),
                               target=make_connection("Their CRM", organization=other_org))
    error = in_review(theirs)[0]
    client.force_login(alice)

    for code in (error.code, UNKNOWN):
        assert client.get(reverse("review_error", args=[code])).status_code == 404
        assert client.get(reverse("review_error_outcome", args=[code])).status_code == 404
        assert client.post(reverse("review_error", args=[code]), values(error, last_name="X")).status_code == 404
        assert client.post(reverse("review_error_ignore", args=[code]), {"reason": "x"}).status_code == 404
    assert error.code not in [row.code for row in client.get(reverse("review_queue")).context["page"].rows]
    error.refresh_from_db()
    assert error.status == ErrorStatus.IN_REVIEW and error.edited_payload is None


def test_a_system_error_is_not_a_record_to_review(client, alice, review_mapping):
    run = RecordError.objects.filter(mapping=review_mapping).first().run
    system = RecordError.objects.create(organization=review_mapping.organization, run=run, mapping=review_mapping,
                                        level=ErrorLevel.SYSTEM, category="connection", message="Down",
                                        fingerprint="x" * 40)
    client.force_login(alice)

    assert client.get(reverse("review_error", args=[system.code])).status_code == 404


def test_a_viewer_sees_the_queue_and_a_record_but_every_action_is_refused(client, viewer, review_mapping):
    error = in_review(review_mapping)[0]
    client.force_login(viewer)

    assert client.get(reverse("review_queue")).status_code == 200
    page = client.get(reverse("review_error", args=[error.code]))
    assert page.status_code == 200
    text = page.content.decode()
    assert "Save and retry" not in text and "Ignore with this reason" not in text
    assert client.post(reverse("review_error", args=[error.code]), values(error, last_name="X")).status_code == 403
    assert client.post(reverse("review_error_ignore", args=[error.code]), {"reason": "x"}).status_code == 403
    error.refresh_from_db()
    assert error.status == ErrorStatus.IN_REVIEW and error.edited_payload is None


def queries_of(client, url):
    client.get(url)  # warm-up: the session's first write, content types
    with CaptureQueriesContext(connection) as captured:
        response = client.get(url)
    assert response.status_code == 200
    return len(captured.captured_queries)


def test_the_queue_costs_the_same_queries_for_5_records_as_for_50(client, alice, make_mapping,
                                                                  django_assert_max_num_queries):
    few = review_mapping_of(make_mapping, 5)
    client.force_login(alice)
    with django_assert_max_num_queries(12):
        client.get(reverse("review_queue"))
    small = queries_of(client, reverse("review_queue"))
    seed_records(few.source_connection, "contacts", [person(n, last_name="") for n in range(6, 51)])
    run_mapping(few)
    assert len(in_review(few)) >= 50

    assert queries_of(client, reverse("review_queue")) == small
    error = in_review(few)[0]
    assert queries_of(client, reverse("review_error", args=[error.code])) <= 12
