"""A target that answers 429 or 503 with a Retry-After of 1 or 2 seconds to 80% of its calls (seeded).

The target is the reference connector service on loopback (tests/faults/targets.py): real sockets, real headers.
The mapping retries with backoff and replays failures automatically, as the demo's does; the recovery is driven
as production drives it: the retry sweeper's task (every half second here instead of every minute, the retry
schedule shortened to seconds) and the mapping's schedule, which queues a run only when the last one ended a
few seconds ago (its real period is minutes, far longer than a Retry-After). Nobody edits a row.

Asserted: no call about a record is sent again, to the same endpoint, sooner than the Retry-After of the refusal
before it (measured at the server, 50 ms of tolerance); in the end every record is in the target exactly once;
no error of a retryable category is left failed for good. Slow: about a minute and a half.

Found by it: automated replay took a run's rate-limited failures the moment the run finished and wrote them
again within their Retry-After (it now leaves them to the sweeper); and a run stopped at its start because the
target asked to be called later (its check answered 429 or 503 with Retry-After, in-request retries and all)
counted towards the mapping's auto-pause, so a throttled target paused the mapping after five such runs and
every record waited for a person (such runs no longer count). The quick tests below keep both so.
"""

import random
import time
from collections import Counter

import pytest
from django.db.models import Q

from integrations.connectors.sandbox import seed_records
from integrations.models import Connection
from syncs.models import UNRESOLVED_ERROR_STATUSES, ErrorStatus, LinkStatus, RecordError, RecordLink, RunStatus, SyncRun
from syncs.pause import pause_after_failed_runs
from syncs.tasks import run_scheduled_mapping, sweep_retries
from tests.faults.targets import SECRET, Call, early_retries, serve_misbehaving
from tests.syncs.helpers import person, run_mapping

RECORDS = 60
REFUSED_SHARE = 0.8
RETRY_AFTER = (1, 2)
SCHEDULE_GAP = 3  # seconds after the last run before the schedule queues another (longer than any Retry-After)
SETTLE_TIMEOUT = 240
RETRYABLE = ("connection", "timeout", "rate_limit", "unknown")


@pytest.fixture
def throttled(fault_seed):
    rng = random.Random(fault_seed)

    def decide(call):
        if rng.random() >= REFUSED_SHARE:
            return None
        return ("refuse", rng.choice((429, 503)), rng.choice(RETRY_AFTER))

    server = serve_misbehaving(decide)
    yield server
    server.service.release.set()
    server.stop()


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_a_rate_limited_target_is_never_called_again_too_early_and_gets_every_record(
    make_mapping, make_connection, org, throttled, settings, fault_seed, fault_figures
):
    replay = f"(RESYNC_FAULT_SEED={fault_seed} replays this)"
    settings.RESYNC_ALLOW_PRIVATE_URLS = True
    # Production's three in-request retries, shorter (each waits at least the Retry-After anyway). With only one,
    # most refusals reach the retry schedule and the test needs more than its 240 s on a slow machine; seed 626031
    # also left one connection error open (not scheduled) that way: to be understood (see the issue note).
    settings.RESYNC_HTTP_RETRY_DELAYS = [0.2, 0.2, 0.2]
    target = Connection(organization=org, name="Throttled CRM", provider="connector_service",
                        config={"url": throttled.url})
    target.credentials = {"signing_secret": SECRET}
    target.save()
    mapping = make_mapping(target=target, error_strategy="retry", retry_schedule=[1, 2, 4], max_retries=3,
                           automated_replay=True, batch_size=20)
    emails = [person(n)["email"] for n in range(RECORDS)]
    seed_records(mapping.source_connection, "contacts", [person(n) for n in range(RECORDS)])

    def synced():
        return RecordLink.objects.filter(mapping=mapping, status=LinkStatus.SYNCED).count()

    def waiting():
        return RecordError.objects.filter(mapping=mapping, status__in=(
            ErrorStatus.RETRY_SCHEDULED, ErrorStatus.RETRYING)).exists()

    started = time.monotonic()
    deadline = started + SETTLE_TIMEOUT
    last_run_ended = None
    while synced() < RECORDS or waiting():
        assert time.monotonic() < deadline, f"not settled in {SETTLE_TIMEOUT} s {replay}: " + str(dict(Counter(
            RecordError.objects.filter(mapping=mapping).values_list("status", "category"))))
        if waiting():
            sweep_retries()  # tasks run inline: a retry run it queues is executed here
        elif last_run_ended is None or time.monotonic() - last_run_ended >= SCHEDULE_GAP:
            run_scheduled_mapping(mapping.pk)
            last_run_ended = time.monotonic()
        if waiting() or synced() < RECORDS:
            time.sleep(0.5)

    calls = throttled.service.calls
    early = early_retries(calls)
    assert early == [], f"{len(early)} calls came before their Retry-After {replay}: {early[:5]}"
    stored = [record["data"]["email"] for record in throttled.service.service.records("contacts")]
    assert sorted(stored) == sorted(emails), f"lost or doubled {replay}: {Counter(stored).most_common(3)}"
    failed_for_good = RecordError.objects.filter(mapping=mapping, category__in=RETRYABLE).filter(
        Q(status__in=UNRESOLVED_ERROR_STATUSES) | Q(status=ErrorStatus.EXHAUSTED))
    assert not failed_for_good.exists(), f"{replay} " + str(list(failed_for_good.values_list(
        "source_record_id", "status", "category", "attempts")[:5]))

    refused = [call for call in calls if call.retry_after]
    runs = SyncRun.objects.filter(mapping=mapping)
    assert len(refused) >= 0.6 * len(calls), "the target refused far fewer calls than asked"
    fault_figures(
        runs=runs.count(), records=RECORDS, lost=len(set(emails) - set(stored)),
        duplicates=len(stored) - len(set(stored)), refused=len(refused),
        retries=runs.filter(trigger__in=("retry", "replay")).count(), calls=len(calls),
        refused_429=sum(call.status == 429 for call in refused), early_retries=len(early),
        runs_failed_at_start=runs.filter(status=RunStatus.FAILED).exclude(system_error="").count(),
    )


# --- auto-pause is for broken mappings, not throttled targets --------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize(("faults", "paused"), [
    ({"rate_limit_every": 1, "retry_after": 2, "operations": ["check"]}, False),  # 429 with Retry-After
    ({"fail_calls": [1, 2], "failure_kind": "503", "operations": ["check"]}, True),  # down, no word on when
])
def test_runs_stopped_by_a_target_asking_to_be_called_later_do_not_pause_the_mapping(make_mapping, make_connection,
                                                                                      faults, paused):
    target = make_connection("CRM", faults=faults)
    mapping = make_mapping(target=target, pause_after_failed_runs=2)
    seed_records(mapping.source_connection, "contacts", [person(1)])

    first, second = run_mapping(mapping), run_mapping(mapping)

    assert (first.status, second.status) == (RunStatus.FAILED, RunStatus.FAILED)
    mapping.refresh_from_db()
    assert mapping.is_active is not paused


@pytest.mark.django_db
def test_throttled_runs_neither_count_nor_break_a_streak_of_failures(make_mapping, make_connection):
    target = make_connection("CRM", faults={"fail_calls": [1], "failure_kind": "503", "operations": ["check"]})
    mapping = make_mapping(target=target, pause_after_failed_runs=2)
    seed_records(mapping.source_connection, "contacts", [person(1)])
    run_mapping(mapping)  # failed: the target is down
    target.config = {"faults": {"rate_limit_every": 1, "retry_after": 2, "operations": ["check"]}}
    target.save()
    run_mapping(mapping)  # failed: throttled, not counted
    assert mapping.is_active
    target.config = {"faults": {"failure_rate": 1.0, "failure_kind": "503", "operations": ["check"]}}
    target.save()

    last = run_mapping(mapping)  # failed again: two failures in a row, the throttled run between them

    mapping.refresh_from_db()
    assert last.status == RunStatus.FAILED and not mapping.is_active
    assert pause_after_failed_runs(last) is False  # already paused


# --- automated replay waits for Retry-After --------------------------------------------------------------------


@pytest.mark.django_db
def test_automated_replay_leaves_records_the_target_asked_to_wait_for_to_the_sweeper(make_mapping, make_connection):
    target = make_connection("CRM", faults={"rate_limit_every": 1, "retry_after": 30, "operations": ["write"]})
    mapping = make_mapping(target=target, error_strategy="retry", automated_replay=True, match_keys=[])
    seed_records(mapping.source_connection, "contacts", [person(1)])

    first = run_mapping(mapping)

    (error,) = RecordError.objects.filter(run=first)
    assert (error.category, error.status) == ("rate_limit", ErrorStatus.RETRY_SCHEDULED)
    assert error.next_retry_at >= error.retry_after_until
    assert not SyncRun.objects.filter(mapping=mapping, trigger="replay").exists()


def test_early_retries_are_measured_per_endpoint_and_record_from_the_refusal_before():
    calls = [
        Call(0.0, "PUT", "/v1/data", ("a", "b"), status=429, retry_after=2),
        Call(0.5, "POST", "/v1/data/find", ("a",)),  # another endpoint: not the same request
        Call(1.0, "PUT", "/v1/data", ("b",)),  # 1 s early
        Call(2.0, "PUT", "/v1/data", ("a",), status=503, retry_after=1),  # on time, refused again
        Call(2.99, "PUT", "/v1/data", ("a",)),  # within the tolerance
    ]

    assert early_retries(calls) == [{"call": "PUT /v1/data", "record": "b", "too_early_by": 1.0}]
