"""A bulk action's page (syncs/views/bulk.py): "retry / ignore every matching error" lands there, it follows the
action while a worker carries it out (an htmx poll that stops once it is done), then says what it did and links
back to the list it came from. Another organization's action is not found; a viewer may look."""

import uuid

import pytest
from django.urls import reverse

from accounts.models import Membership, Role
from syncs.models import BulkAction, BulkActionKind, BulkActionStatus, ErrorStatus, RecordError


@pytest.fixture
def acme(org, history_of):
    return history_of(org, "Acme")


def retry_all(client, query, **extra):
    return client.post(reverse("errors_retry"), {**query, "all_matching": "1", "confirm": "1", **extra})


def test_retry_all_matching_lands_on_the_actions_page_which_polls_while_queued(client, bob, org, acme):
    client.force_login(bob)
    back = f"{reverse('errors')}?filtered=1&category=validation"
    query = {"filtered": "1", "category": "validation", "status": ["open", "retry_scheduled"]}

    # Not yet taken by a worker (its task is queued on commit, which has not come).
    response = retry_all(client, query, back=back)

    action = BulkAction.objects.get(organization=org)
    assert response.status_code == 302
    assert response.url.startswith(reverse("bulk_action", args=[action.code]))
    waiting = client.get(response.url)
    page = waiting.content.decode()
    assert "Waiting for a worker" in page and "Retrying the 12 matching errors in the background" in page
    assert 'hx-trigger="every 2s"' in page and f'href="{back}"' in page.replace("&amp;", "&")
    polled = client.get(response.url, headers={"HX-Request": "true"})
    assert polled.status_code == 200 and "<html" not in polled.content.decode()
    assert 'id="bulk-action-status"' in polled.content.decode()

    BulkAction.objects.filter(pk=action.pk).update(status=BulkActionStatus.RUNNING)
    assert "A worker is queueing the retries" in client.get(response.url).content.decode()


def test_a_done_retry_shows_its_counts_and_replay_runs_and_stops_polling(client, bob, org, acme, execute_queued):
    client.force_login(bob)
    with execute_queued():
        response = retry_all(client, {"filtered": "1", "category": "validation", "status": ["open"]})
    action = BulkAction.objects.get(organization=org)
    assert action.status == BulkActionStatus.SUCCEEDED, action.failure

    page = client.get(response.url).content.decode()

    assert "Errors queued for a retry" in page and f"<dd>{action.summary['queued']}</dd>" in page
    assert action.summary["queued"] == 12 and action.summary["runs"]
    for code in action.summary["runs"]:
        assert reverse("run_detail", args=[code]) in page
    assert "hx-trigger" not in page and 'id="bulk-action-title">Done<' in page
    assert f'href="{reverse("errors")}"' in page  # no back given: the errors list


def test_ignore_all_matching_lands_on_the_page_with_what_was_ignored(client, bob, org, acme, execute_queued):
    client.force_login(bob)
    with execute_queued():
        response = client.post(reverse("errors_ignore"), {
            "filtered": "1", "code": "already_exists", "all_matching": "1", "confirm": "1",
            "reason": "Duplicates are merged by hand"})
    action = BulkAction.objects.get(organization=org)

    page = client.get(response.url).content.decode()

    assert response.url.startswith(reverse("bulk_action", args=[action.code]))
    assert "Ignore every matching error" in page and "Errors ignored" in page and "<dd>6</dd>" in page
    assert RecordError.objects.for_org(org).filter(status=ErrorStatus.IGNORED).count() == 6


def test_a_failed_action_says_why_and_that_nothing_changed(client, alice, org):
    action = BulkAction.objects.create(organization=org, kind=BulkActionKind.RETRY, status=BulkActionStatus.FAILED,
                                       selection={"filter": {}}, failure="The selection is no longer valid: run")
    client.force_login(alice)

    page = client.get(reverse("bulk_action", args=[action.code])).content.decode()

    assert "The selection is no longer valid: run" in page and "Nothing was changed" in page
    assert "hx-trigger" not in page


def test_another_organizations_action_is_not_found_and_a_viewer_may_look(client, org, other_org, charlie,
                                                                         django_user_model):
    theirs = BulkAction.objects.create(organization=other_org, kind=BulkActionKind.IGNORE, selection={"ids": []})
    ours = BulkAction.objects.create(organization=org, kind=BulkActionKind.IGNORE, selection={"ids": []})
    viewer = django_user_model.objects.create_user("victor", "victor@example.org", "victor-password")
    Membership.objects.create(user=viewer, organization=org, role=Role.VIEWER)
    client.force_login(viewer)

    assert client.get(reverse("bulk_action", args=[theirs.code])).status_code == 404
    assert client.get(reverse("bulk_action", args=[uuid.uuid4()])).status_code == 404
    assert client.get(reverse("bulk_action", args=[ours.code])).status_code == 200


def test_the_back_link_is_a_local_path_only(client, alice, org):
    action = BulkAction.objects.create(organization=org, kind=BulkActionKind.RETRY, selection={"ids": []})
    client.force_login(alice)

    page = client.get(reverse("bulk_action", args=[action.code]), {"back": "https://evil.example/"}).content.decode()

    assert "evil.example" not in page and f'href="{reverse("errors")}"' in page
