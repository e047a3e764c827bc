"""The runs and errors pages with Django's test client: what they show, their filters and keyset pages, every
action through the API's services, tenancy (another organization's run or error answers 404), roles (a viewer
sees but cannot act) and query bounds, the errors list's included with many errors."""

import uuid
from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from accounts.models import Membership, Role
from syncs.models import (
    BulkAction,
    BulkActionKind,
    ErrorLevel,
    ErrorStatus,
    RecordError,
    RunStatus,
    SyncBatch,
    SyncRun,
    Trigger,
)

UNKNOWN = uuid.UUID(int=0)


@pytest.fixture
def viewer(org, django_user_model):
    user = django_user_model.objects.create_user("victor", "victor@example.org", "victor-password")
    Membership.objects.create(user=user, organization=org, role=Role.VIEWER)
    return user


@pytest.fixture
def acme(org, history_of):
    """Acme's two mappings with a day of history: 3 finished runs each, 12 open errors in 4 groups per mapping."""
    return history_of(org, "Acme")


def page_of(client, user, url, **params):
    client.force_login(user)
    response = client.get(url, params)
    assert response.status_code == 200, response.status_code
    return response, response.content.decode()


def partially_failed(org):
    return SyncRun.objects.for_org(org).filter(status=RunStatus.PARTIALLY_FAILED).order_by("pk").first()


def an_error(org, **lookup):
    return RecordError.objects.for_org(org).filter(**lookup).order_by("pk").first()


# --- every page needs a login, and another organization's objects are not found --------------------------------


def pages(run, error):
    return [("runs", {}), ("run_detail", {"code": run.code}), ("run_progress", {"code": run.code}),
            ("run_errors", {"code": run.code}), ("errors", {}), ("error_groups", {}),
            ("error_detail", {"code": error.code})]


def test_every_page_sends_anonymous_visitors_to_the_login(client, org, acme):
    for name, kwargs in pages(partially_failed(org), an_error(org)):
        url = reverse(name, kwargs=kwargs)
        response = client.get(url)
        assert response.status_code == 302 and response.url.startswith(reverse("login")), name


def test_another_organizations_runs_and_errors_answer_404_on_every_page_and_action(client, alice, other_org,
                                                                                    history_of):
    history_of(other_org, "Globex")
    theirs_run, theirs_error = partially_failed(other_org), an_error(other_org)
    client.force_login(alice)

    for name, kwargs in pages(theirs_run, theirs_error):
        if kwargs:
            assert client.get(reverse(name, kwargs=kwargs)).status_code == 404, name
    for name, kwargs in [("run_retry_failures", {"code": theirs_run.code}), ("run_cancel", {"code": theirs_run.code}),
                         ("error_retry", {"code": theirs_error.code}), ("error_resolve", {"code": theirs_error.code}),
                         ("error_preview", {"code": theirs_error.code}),
                         ("error_group_retry", {"fingerprint": theirs_error.fingerprint})]:
        assert client.post(reverse(name, kwargs=kwargs)).status_code == 404, name
    assert client.post(reverse("error_ignore", args=[theirs_error.code]), {"reason": "x"}).status_code == 404
    assert client.post(reverse("errors_retry"), {"ids": [str(theirs_error.code)]}).status_code == 404
    assert client.post(reverse("errors_ignore"), {"ids": [str(theirs_error.code)], "reason": "x",
                                                  "confirm": "1"}).status_code == 404
    assert client.get(reverse("run_detail", args=[UNKNOWN])).status_code == 404
    theirs_error.refresh_from_db()
    assert theirs_error.status == ErrorStatus.OPEN
    assert not SyncRun.objects.filter(parent=theirs_run).exists()


def test_another_organizations_mapping_is_not_a_filter_choice(client, alice, org, acme, other_org, history_of):
    theirs = history_of(other_org, "Globex")[0]

    response, page = page_of(client, alice, reverse("errors"), filtered="1", mapping=str(theirs.code))

    assert "Globex" not in page
    assert "mapping" in response.context["filters"].errors
    assert response.context["page"].rows == []


# --- runs -------------------------------------------------------------------------------------------------------


def test_the_runs_list_shows_runs_newest_first_without_test_runs(client, alice, org, acme, make_mapping):
    SyncRun.objects.create(organization=org, mapping=acme[0], trigger=Trigger.TEST, is_test=True,
                           status=RunStatus.SUCCEEDED)

    response, page = page_of(client, alice, reverse("runs"))

    runs = response.context["page"].rows
    assert len(runs) == 7  # 3 finished per mapping and the one running; the test run is hidden
    assert all(not run.is_test for run in runs)
    assert [run.queued_at for run in runs] == sorted((run.queued_at for run in runs), reverse=True)
    assert "Partially failed" in page and "Acme contacts" in page
    assert reverse("run_detail", args=[runs[0].code]) in page


def test_the_runs_list_filters_by_mapping_status_trigger_and_date(client, alice, org, acme):
    contacts = acme[0]

    response, _page = page_of(client, alice, reverse("runs"), filtered="1", mapping=str(contacts.code),
                              status=["failed", "partially_failed"], trigger="schedule")
    assert {(run.mapping_id, run.status) for run in response.context["page"].rows} == {
        (contacts.pk, RunStatus.FAILED), (contacts.pk, RunStatus.PARTIALLY_FAILED)}

    tomorrow = (timezone.now() + timedelta(days=1)).date().isoformat()
    response, page = page_of(client, alice, reverse("runs"), filtered="1", queued_after=tomorrow)
    assert response.context["page"].rows == [] and "No run matches these filters" in page


def test_bad_run_filters_are_a_form_error_not_a_500(client, alice, acme):
    response, page = page_of(client, alice, reverse("runs"), filtered="1", status="exploded",
                             queued_after="not a date", mapping="nope")

    assert set(response.context["filters"].errors) == {"status", "queued_after", "mapping"}
    assert 'class="form-errors"' in page


def test_a_new_organization_is_told_how_runs_come_about(client, alice):
    _response, page = page_of(client, alice, reverse("runs"))

    assert "No runs yet" in page and "manage.py sync --org acme" in page


def test_runs_page_by_keyset_both_ways(client, alice, org, make_mapping):
    mapping = make_mapping()
    now = timezone.now()
    for minutes in range(120):
        run = SyncRun.objects.create(organization=org, mapping=mapping, status=RunStatus.SUCCEEDED)
        SyncRun.objects.filter(pk=run.pk).update(queued_at=now - timedelta(minutes=minutes))

    first, _ = page_of(client, alice, reverse("runs"))
    second, _ = page_of(client, alice, reverse("runs"), after=first.context["page"].older)
    third, _ = page_of(client, alice, reverse("runs"), after=second.context["page"].older)
    back, _ = page_of(client, alice, reverse("runs"), before=third.context["page"].newer)

    seen = [run.pk for response in (first, second, third) for run in response.context["page"].rows]
    assert len(seen) == len(set(seen)) == 120
    assert third.context["page"].older is None and first.context["page"].newer is None
    assert [run.pk for run in back.context["page"].rows] == [run.pk for run in second.context["page"].rows]
    junk, _ = page_of(client, alice, reverse("runs"), after="not-a-cursor")
    assert [run.pk for run in junk.context["page"].rows] == [run.pk for run in first.context["page"].rows]


def test_the_run_detail_shows_counts_batches_chain_and_why_it_is_not_recovered(client, alice, org, acme):
    run = partially_failed(org)
    SyncBatch.objects.create(organization=org, run=run, sequence=0, status="partially_failed", record_count=40,
                             attempts=2)
    child = SyncRun.objects.create(organization=org, mapping=run.mapping, trigger=Trigger.RETRY, parent=run,
                                   root=run, status=RunStatus.PARTIALLY_FAILED, failed=3)

    response, page = page_of(client, alice, reverse("run_detail", args=[run.code]))

    assert response.context["recovery"]["open_failures"] == 12
    assert "Not recovered yet" in page and "12 failures" in page
    assert f"blocking={run.code}" in page
    assert reverse("run_detail", args=[child.code]) in page
    assert "Partially failed" in page and ">40<" in page
    assert "Retry failures" in page and 'hx-trigger="every' not in page  # finished: no polling
    child_page = page_of(client, alice, reverse("run_detail", args=[child.code]))[1]
    assert reverse("run_detail", args=[run.code]) in child_page  # the parent, from the child


def test_a_running_runs_progress_is_polled_until_it_finishes(client, alice, org, acme):
    running = SyncRun.objects.get(organization=org, status=RunStatus.RUNNING)

    _response, page = page_of(client, alice, reverse("run_detail", args=[running.code]))
    assert f'hx-get="{reverse("run_progress", args=[running.code])}"' in page and "Cancel run" in page

    SyncRun.objects.filter(pk=running.pk).update(read=4321)
    partial = client.get(reverse("run_progress", args=[running.code]), headers={"HX-Request": "true"})
    assert "4321" in partial.content.decode() and "<html" not in partial.content.decode()
    assert 'hx-trigger="every 2s"' in partial.content.decode()

    SyncRun.objects.filter(pk=running.pk).update(status=RunStatus.SUCCEEDED, finished_at=timezone.now())
    finished = client.get(reverse("run_progress", args=[running.code])).content.decode()
    assert "hx-trigger" not in finished and "Cancel run" not in finished


def test_retry_failures_queues_a_child_run_through_the_chain_service(client, bob, org, acme, execute_queued):
    run = partially_failed(org)
    client.force_login(bob)

    with execute_queued():
        response = client.post(reverse("run_retry_failures", args=[run.code]), follow=True)

    child = SyncRun.objects.get(parent=run)
    assert response.redirect_chain[-1][0] == reverse("run_detail", args=[child.code])
    assert "Retrying the failures of this run" in response.content.decode()


def test_retry_failures_of_a_run_without_failures_says_why(client, bob, org, acme):
    succeeded = SyncRun.objects.for_org(org).filter(status=RunStatus.SUCCEEDED).first()
    client.force_login(bob)

    response = client.post(reverse("run_retry_failures", args=[succeeded.code]), follow=True)

    assert "Only a finished run with failures can be retried." in response.content.decode()
    assert not SyncRun.objects.filter(parent=succeeded).exists()


def test_cancel_stops_a_running_run_and_refuses_a_finished_one(client, bob, org, acme):
    running = SyncRun.objects.get(organization=org, status=RunStatus.RUNNING)
    client.force_login(bob)

    page = client.post(reverse("run_cancel", args=[running.code]), follow=True).content.decode()
    running.refresh_from_db()
    assert running.status == RunStatus.CANCELED and "stops before its next batch" in page

    finished = partially_failed(org)
    page = client.post(reverse("run_cancel", args=[finished.code]), follow=True).content.decode()
    assert "This run has already finished." in page


def test_a_viewer_sees_runs_but_cannot_act(client, viewer, org, acme):
    run, running = partially_failed(org), SyncRun.objects.get(organization=org, status=RunStatus.RUNNING)

    page = page_of(client, viewer, reverse("run_detail", args=[run.code]))[1]
    live = page_of(client, viewer, reverse("run_detail", args=[running.code]))[1]

    assert "Retry failures" not in page and "Cancel run" not in live
    assert client.post(reverse("run_retry_failures", args=[run.code])).status_code == 403
    assert client.post(reverse("run_cancel", args=[running.code])).status_code == 403
    running.refresh_from_db()
    assert running.status == RunStatus.RUNNING


def test_run_actions_are_posts(client, bob, org, acme):
    run = partially_failed(org)
    client.force_login(bob)

    assert client.get(reverse("run_retry_failures", args=[run.code])).status_code == 405
    assert client.get(reverse("run_cancel", args=[run.code])).status_code == 405


def test_a_runs_errors_tab_lists_its_errors_only(client, alice, org, acme):
    run = partially_failed(org)

    response, page = page_of(client, alice, reverse("run_errors", args=[run.code]))

    rows = response.context["page"].rows
    assert len(rows) == 12 and {error.run_id for error in rows} == {run.pk}
    assert 'aria-current="page">Errors' in page


# --- the errors list --------------------------------------------------------------------------------------------


def test_the_errors_list_lands_on_unresolved_errors_newest_first(client, alice, org, acme):
    resolved = an_error(org)
    RecordError.objects.filter(pk=resolved.pk).update(status=ErrorStatus.RESOLVED)

    response, page = page_of(client, alice, reverse("errors"))

    rows = response.context["page"].rows
    assert len(rows) == 23 and resolved not in rows
    assert [row.created_at for row in rows] == sorted((row.created_at for row in rows), reverse=True)
    assert "Invalid email address" in page and reverse("error_detail", args=[rows[0].code]) in page
    everything, _ = page_of(client, alice, reverse("errors"), filtered="1")
    assert len(everything.context["page"].rows) == 24


def test_the_errors_list_filters_like_the_api(client, alice, org, acme):
    companies = acme[1]
    target = companies.target_connection

    response, _ = page_of(client, alice, reverse("errors"), filtered="1", category="validation",
                          code="too_long", mapping=str(companies.code))
    assert {(e.mapping_id, e.error_code) for e in response.context["page"].rows} == {(companies.pk, "too_long")}
    assert len(response.context["page"].rows) == 3

    response, _ = page_of(client, alice, reverse("errors"), filtered="1", target_connection=str(target.code),
                          status="retry_scheduled")
    assert len(response.context["page"].rows) == 6  # the rate-limit group of both mappings

    response, _ = page_of(client, alice, reverse("errors"), filtered="1", search="olivia")
    assert len(response.context["page"].rows) == 6

    tomorrow = (timezone.now() + timedelta(days=1)).date().isoformat()
    response, page = page_of(client, alice, reverse("errors"), filtered="1", since=tomorrow)
    assert response.context["page"].rows == [] and "No error matches these filters" in page


def test_the_filter_bars_keep_their_widgets_after_the_api_schema_is_generated(client, alice, acme):
    # Generating the schema reads every API filter's form field, which django-filter caches on the filterset
    # class; the pages' filter bars once lost their checkboxes and labels to that cache, in whatever test or
    # web process had served /api/v1/schema/ first.
    client.force_login(alice)
    assert client.get("/api/v1/schema/").status_code == 200
    for name in ("errors", "runs", "record_status"):
        page = client.get(reverse(name)).content.decode()
        assert 'type="checkbox" name="status"' in page, name
    assert 'type="checkbox" name="category"' in client.get(reverse("errors")).content.decode()


def test_bad_error_filters_are_a_form_error_not_a_500(client, alice, acme):
    response, page = page_of(client, alice, reverse("errors"), filtered="1", category="nope", since="yesterday",
                             target_connection=str(UNKNOWN), run="junk")

    assert set(response.context["filters"].errors) == {"category", "since", "target_connection", "run"}
    assert 'class="form-errors"' in page


def test_a_calm_organization_gets_an_empty_state_that_says_what_comes(client, alice, make_mapping):
    make_mapping()

    _response, page = page_of(client, alice, reverse("errors"))
    _response, groups = page_of(client, alice, reverse("error_groups"))

    assert "No open errors" in page and "retry it, fix it or ignore it" in page
    assert "No open error groups" in groups


def test_the_errors_list_queries_stay_bounded_with_many_errors(client, alice, org, acme,
                                                               django_assert_max_num_queries):
    run, mapping = partially_failed(org), acme[0]
    RecordError.objects.bulk_create(
        RecordError(organization=org, run=run, mapping=mapping, category="validation", error_code="bulk",
                    message=f"Bulk failure {number}", source_record_id=f"bulk-{number}", fingerprint="b" * 40)
        for number in range(1500))
    client.force_login(alice)

    with django_assert_max_num_queries(12) as captured:
        response = client.get(reverse("errors"))

    assert response.status_code == 200
    context = response.context
    assert len(context["page"].rows) == 50 and context["matching"] == 1001  # "more than 1,000"
    assert "More than 1,000 match" in response.content.decode()
    # No unbounded count: the only COUNT is of a subquery that stops at the bound.
    counts = [query["sql"] for query in captured.captured_queries if "COUNT(" in query["sql"].upper()]
    assert len(counts) == 1 and "LIMIT 1001" in counts[0]
    with django_assert_max_num_queries(12):
        assert client.get(reverse("errors"), {"after": context["page"].older}).status_code == 200
    with django_assert_max_num_queries(12):
        assert client.get(reverse("error_groups")).status_code == 200


def test_the_other_pages_queries_stay_bounded(client, alice, org, acme, django_assert_max_num_queries):
    run, error = partially_failed(org), an_error(org)
    for sequence in range(30):
        SyncBatch.objects.create(organization=org, run=run, sequence=sequence, status="succeeded", record_count=5)
    client.force_login(alice)

    for url, bound in [(reverse("runs"), 8), (reverse("run_detail", args=[run.code]), 16),
                       (reverse("run_progress", args=[run.code]), 6), (reverse("run_errors", args=[run.code]), 12),
                       (reverse("error_detail", args=[error.code]), 8)]:
        with django_assert_max_num_queries(bound):
            assert client.get(url).status_code == 200, url


# --- acting on errors from the list -----------------------------------------------------------------------------


def test_retry_selected_retries_those_errors_and_says_what_happened(client, bob, org, acme):
    errors = list(RecordError.objects.for_org(org).filter(error_code="invalid_email").order_by("pk")[:2])
    client.force_login(bob)

    response = client.post(reverse("errors_retry"), {"ids": [str(e.code) for e in errors],
                                                     "back": "/errors/?filtered=1&category=validation"}, follow=True)

    assert response.redirect_chain[-1][0] == "/errors/?filtered=1&category=validation"
    assert "Retrying 2 errors in 1 run." in response.content.decode()
    replay = SyncRun.objects.get(trigger=Trigger.RETRY, mapping=errors[0].mapping)
    assert sorted(replay.options["errors"]) == sorted(e.pk for e in errors)


def test_retry_selected_says_what_was_left_out(client, bob, org, acme):
    error = an_error(org)
    RecordError.objects.filter(pk=error.pk).update(status=ErrorStatus.IGNORED)
    client.force_login(bob)

    page = client.post(reverse("errors_retry"), {"ids": [str(error.code)]}, follow=True).content.decode()

    assert "Nothing was retried. Left out: 1 already resolved or ignored." in page


def test_an_empty_selection_or_a_bad_id_is_a_message_not_a_500(client, bob, acme):
    client.force_login(bob)

    empty = client.post(reverse("errors_retry"), {}, follow=True).content.decode()
    junk = client.post(reverse("errors_retry"), {"ids": ["junk"]}, follow=True).content.decode()

    assert "Select at least one error." in empty
    assert "An error id is not valid." in junk


def test_an_outside_back_address_is_not_followed(client, bob, org, acme):
    client.force_login(bob)

    response = client.post(reverse("errors_retry"), {"ids": [str(an_error(org).code)],
                                                     "back": "https://evil.example/errors/"})

    assert response.url == reverse("errors")


def test_retry_all_matching_confirms_how_many_then_hands_the_filter_to_a_bulk_action(client, bob, org, acme,
                                                                                    execute_queued):
    client.force_login(bob)
    query = {"filtered": "1", "category": "validation", "status": ["open", "retry_scheduled"]}

    confirm = client.get(reverse("errors_retry"), query)
    page = confirm.content.decode()
    assert "12 errors will be retried" in page
    assert "Validation" in page and "Retry 12 errors" in page

    with execute_queued():
        response = client.post(reverse("errors_retry"), {**query, "all_matching": "1", "confirm": "1"},
                               follow=True)

    action = BulkAction.objects.get(organization=org)
    assert action.kind == BulkActionKind.RETRY
    assert action.selection == {"filter": {"category": ["validation"], "status": ["open", "retry_scheduled"]}}
    assert "Retrying the 12 matching errors in the background" in response.content.decode()
    action.refresh_from_db()
    assert action.status == "succeeded" and action.summary["queued"] == 12


def test_retry_all_matching_with_nothing_to_retry_offers_no_button(client, bob, acme):
    client.force_login(bob)

    page = client.get(reverse("errors_retry"), {"filtered": "1", "code": "nothing-like-this"}).content.decode()

    assert "Nothing to do" in page and "Retry 0" not in page


def test_retry_all_matching_with_a_bad_filter_is_a_form_error(client, bob, acme):
    client.force_login(bob)

    confirm = client.get(reverse("errors_retry"), {"filtered": "1", "since": "whenever"})
    post = client.post(reverse("errors_retry"), {"filtered": "1", "since": "whenever", "all_matching": "1"})

    assert "These filters are not valid" in confirm.content.decode()
    assert post.status_code == 400 and not BulkAction.objects.exists()


def test_ignore_selected_asks_for_a_reason_then_ignores(client, bob, org, acme):
    errors = list(RecordError.objects.for_org(org).filter(error_code="too_long").order_by("pk")[:3])
    ids = [str(error.code) for error in errors]
    client.force_login(bob)

    ask = client.post(reverse("errors_ignore"), {"ids": ids})
    assert ask.status_code == 200 and "3 selected errors will be ignored" in ask.content.decode()
    assert "This field is required" not in ask.content.decode()

    blank = client.post(reverse("errors_ignore"), {"ids": ids, "confirm": "1", "reason": "  "})
    assert blank.status_code == 400 and "This field is required." in blank.content.decode()
    assert not RecordError.objects.filter(pk__in=[e.pk for e in errors], status=ErrorStatus.IGNORED).exists()

    done = client.post(reverse("errors_ignore"), {"ids": ids, "confirm": "1", "reason": "Test companies"},
                       follow=True)
    assert "Ignored 3 errors." in done.content.decode()
    assert set(RecordError.objects.filter(pk__in=[e.pk for e in errors]).values_list("status", "resolution_note")) \
        == {(ErrorStatus.IGNORED, "Test companies")}


def test_ignore_all_matching_needs_a_reason_and_goes_to_a_bulk_action(client, bob, org, acme):
    client.force_login(bob)
    query = {"filtered": "1", "code": "already_exists"}

    confirm = client.get(reverse("errors_ignore"), query).content.decode()
    assert "6 errors will be ignored" in confirm and 'name="reason"' in confirm

    blank = client.post(reverse("errors_ignore"), {**query, "all_matching": "1", "confirm": "1", "reason": ""})
    assert blank.status_code == 400 and not BulkAction.objects.exists()

    done = client.post(reverse("errors_ignore"), {**query, "all_matching": "1", "confirm": "1",
                                                  "reason": "Duplicates are merged by hand"}, follow=True)
    action = BulkAction.objects.get()
    assert (action.kind, action.options) == (BulkActionKind.IGNORE, {"note": "Duplicates are merged by hand"})
    assert action.selection == {"filter": {"code": "already_exists"}}
    assert "Ignoring the 6 matching errors in the background" in done.content.decode()


def test_a_viewer_sees_errors_but_no_action_and_every_action_is_refused(client, viewer, org, acme):
    error = an_error(org)

    _response, page = page_of(client, viewer, reverse("errors"))
    detail = page_of(client, viewer, reverse("error_detail", args=[error.code]))[1]
    groups = page_of(client, viewer, reverse("error_groups"))[1]

    assert "Retry selected" not in page and 'name="ids"' not in page
    assert "Retry this record" not in detail and "Ignore with this reason" not in detail
    assert "Retry group" not in groups
    assert client.get(reverse("errors_retry"), {"filtered": "1"}).status_code == 403
    assert client.get(reverse("errors_ignore"), {"filtered": "1"}).status_code == 403
    for name, kwargs, data in [("errors_retry", {}, {"ids": [str(error.code)]}),
                               ("errors_ignore", {}, {"ids": [str(error.code)], "reason": "x", "confirm": "1"}),
                               ("error_retry", {"code": error.code}, {}),
                               ("error_ignore", {"code": error.code}, {"reason": "x"}),
                               ("error_resolve", {"code": error.code}, {}),
                               ("error_preview", {"code": error.code}, {}),
                               ("error_group_retry", {"fingerprint": error.fingerprint}, {})]:
        assert client.post(reverse(name, kwargs=kwargs), data).status_code == 403, name
    error.refresh_from_db()
    assert error.status == ErrorStatus.OPEN


# --- groups ------------------------------------------------------------------------------------------------------


def test_the_groups_view_groups_by_fingerprint_and_retries_a_group_probe_first(client, bob, org, acme):
    client.force_login(bob)

    response = client.get(reverse("error_groups"))
    groups = response.context["groups"]
    assert len(groups) == 8 and all(group["count"] == 3 for group in groups)
    assert "Invalid email address" in response.content.decode()

    email = next(group for group in groups if group["error_code"] == "invalid_email")
    done = client.post(reverse("error_group_retry", args=[email["fingerprint"]]),
                       {"back": "/errors/groups/?filtered=1"}, follow=True)
    assert done.redirect_chain[-1][0] == "/errors/groups/?filtered=1"
    assert "Retrying one record of the group first; the other 2 follow once it has synced." in \
        done.content.decode()

    again = client.post(reverse("error_group_retry", args=[email["fingerprint"]]), follow=True)
    assert "already waiting for its first record" in again.content.decode()
    assert client.post(reverse("error_group_retry", args=["f" * 40])).status_code == 404


def test_the_groups_view_takes_the_same_filters(client, alice, org, acme):
    response, _ = page_of(client, alice, reverse("error_groups"), filtered="1", mapping=str(acme[1].code),
                          category="validation")

    assert {(group["mapping"], group["category"]) for group in response.context["groups"]} == {
        ("Acme companies", "validation")}
    assert len(response.context["groups"]) == 2


# --- one error ---------------------------------------------------------------------------------------------------


def test_the_error_detail_pairs_each_source_value_with_its_target_value(client, alice, org, acme):
    error = an_error(org, error_code="invalid_email", direction="forward")
    error.mapping.field_mappings.filter(source_field="first_name").update(target_field="firstname")
    error.mapping.field_mappings.filter(source_field="phone").update(target_field="mobile")
    RecordError.objects.filter(pk=error.pk).update(
        snapshot_before={"id": "c-1", "email": "olivia.bennett@example", "first_name": "Olivia",
                         "phone": "(555) 010-2030", "last_name": "Bennett"},
        snapshot_after={"email": "olivia.bennett@example", "firstname": "Olivia", "mobile": "+15550102030",
                        "hs_lead_status": "NEW"},
        detail="HTTP 400 from the CRM: {\"message\": \"INVALID_EMAIL\"}", field="email", attempts=2)

    response, page = page_of(client, alice, reverse("error_detail", args=[error.code]))

    rows = {row["key"]: row for row in response.context["snapshots"]}
    assert list(rows) == ["email", "first_name → firstname", "last_name", "phone → mobile", "id", "hs_lead_status"]
    assert not rows["email"]["differs"] and not rows["first_name → firstname"]["differs"]
    assert rows["phone → mobile"]["differs"]  # phone_e164 changed it
    assert rows["last_name"]["differs"] and not rows["last_name"]["in_after"]  # read, then not written
    assert rows["id"]["unmapped"] and not rows["id"]["differs"] and not rows["id"]["in_after"]
    assert rows["hs_lead_status"]["unmapped"] and not rows["hs_lead_status"]["in_before"]
    assert page.count('class="differs"') == 2 and "not mapped" in page
    assert "Invalid email address" in page and "INVALID_EMAIL" in page and "Technical detail" in page
    assert "sk_test_canary_4f9a" not in page  # the connections' secrets appear nowhere


def test_a_reverse_errors_snapshots_pair_target_fields_with_source_fields(client, alice, org, acme):
    error = an_error(org, error_code="invalid_email")
    error.mapping.field_mappings.filter(source_field="first_name").update(target_field="firstname")
    RecordError.objects.filter(pk=error.pk).update(
        direction="reverse", snapshot_before={"firstname": "Olivia "}, snapshot_after={"first_name": "Olivia"})

    response, _ = page_of(client, alice, reverse("error_detail", args=[error.code]))

    [row] = response.context["snapshots"]
    assert (row["key"], row["before"], row["after"], row["differs"]) == ("firstname → first_name", "Olivia ",
                                                                         "Olivia", True)


def test_the_error_detail_lists_the_records_earlier_errors_newest_first(client, alice, org, acme):
    error = an_error(org, error_code="invalid_email")
    earlier = RecordError.objects.create(
        organization=org, run=error.run, mapping=error.mapping, category="timeout", message="The CRM timed out",
        source_record_id=error.source_record_id, fingerprint="c" * 40, status=ErrorStatus.RESOLVED,
        resolution="superseded")
    RecordError.objects.filter(pk=earlier.pk).update(created_at=error.created_at - timedelta(hours=1))
    RecordError.objects.create(organization=org, run=error.run, mapping=error.mapping, category="timeout",
                               message="Other direction", source_record_id=error.source_record_id,
                               direction="reverse", fingerprint="d" * 40)

    response, page = page_of(client, alice, reverse("error_detail", args=[error.code]))

    assert [e.pk for e in response.context["history"]] == [error.pk, earlier.pk]
    assert "The CRM timed out" in page and "Other direction" not in page


def test_retry_one_error_from_its_page(client, bob, org, acme):
    error = an_error(org, mapping=acme[1])  # a mapping with no run under way: the retry claims it at once
    client.force_login(bob)

    page = client.post(reverse("error_retry", args=[error.code]), follow=True).content.decode()

    assert "Retrying this record now" in page
    assert SyncRun.objects.filter(trigger=Trigger.RETRY, options__errors=[error.pk]).exists()
    again = client.post(reverse("error_retry", args=[error.code]), follow=True).content.decode()
    assert "already being retried" in again


def test_ignore_one_error_needs_a_reason(client, bob, org, acme):
    error = an_error(org)
    client.force_login(bob)

    blank = client.post(reverse("error_ignore", args=[error.code]), {"reason": ""})
    assert blank.status_code == 400 and "This field is required." in blank.content.decode()
    done = client.post(reverse("error_ignore", args=[error.code]), {"reason": "A test record"}, follow=True)

    error.refresh_from_db()
    assert (error.status, error.resolution_note) == (ErrorStatus.IGNORED, "A test record")
    assert "Ignored: this record is no longer counted as unsynced." in done.content.decode()
    assert "A test record" in done.content.decode()
    assert "Ignore with this reason" not in done.content.decode()  # closed: nothing left to do


def test_resolve_one_error_and_a_second_resolve_says_it_is_done(client, bob, org, acme):
    error = an_error(org)
    client.force_login(bob)

    client.post(reverse("error_resolve", args=[error.code]), {"note": "Fixed in the CRM"})
    error.refresh_from_db()
    assert (error.status, error.resolution_note) == (ErrorStatus.RESOLVED, "Fixed in the CRM")
    again = client.post(reverse("error_resolve", args=[error.code]), follow=True).content.decode()
    assert "This error is already resolved." in again


def test_the_replay_preview_runs_as_a_test_and_changes_nothing(client, bob, org, acme):
    error = an_error(org, error_code="invalid_email")
    RecordError.objects.filter(pk=error.pk).update(
        snapshot_before={"id": error.source_record_id, "email": "olivia@example.org", "first_name": "Olivia",
                         "last_name": "Bennett", "phone": ""})
    client.force_login(bob)

    response = client.post(reverse("error_preview", args=[error.code]), headers={"HX-Request": "true"})

    page = response.content.decode()
    assert response.status_code == 200 and "<html" not in page
    assert "If you retry now" in page and "Nothing was written" in page
    error.refresh_from_db()
    assert error.status == ErrorStatus.OPEN


def test_a_warning_is_shown_but_not_offered_for_retry(client, bob, org, acme):
    error = an_error(org)
    RecordError.objects.filter(pk=error.pk).update(level=ErrorLevel.WARNING)
    client.force_login(bob)

    page = client.get(reverse("error_detail", args=[error.code])).content.decode()
    refused = client.post(reverse("error_retry", args=[error.code]), follow=True).content.decode()

    assert "Retry this record" not in page and "Warning errors are not retried" in page
    assert "Only record and batch errors can be retried." in refused


def test_the_navigation_links_runs_and_errors(client, alice, org, acme):
    _response, page = page_of(client, alice, reverse("error_groups"))

    assert '<a href="/runs/">Runs</a>' in page
    assert '<a href="/errors/" aria-current="page">Errors</a>' in page
