"""A target that accepts the connection and never answers: the client's timeout cuts each call off, the failure
is classified as a timeout, and the records are retried and synced once the target answers again.

The target is the reference connector service on loopback (tests/faults/targets.py): its writes hang on a real
socket until the test ends, so only RESYNC_HTTP_TIMEOUT (half a second here) ends them. Quick enough for the
normal suite (a few seconds).
"""

import time

import pytest

from integrations.connectors.sandbox import seed_records
from integrations.models import Connection
from syncs.models import ErrorLevel, ErrorStatus, LinkStatus, RecordError, RecordLink, Resolution, SyncRun
from syncs.tasks import sweep_retries
from tests.faults.targets import SECRET, serve_misbehaving
from tests.syncs.helpers import person, run_mapping

RECORDS = 20
TIMEOUT = 0.5
RETRY_DELAY = 5  # seconds: longer than the first run, so its retry starts once the target answers again
SLACK = 2.0  # seconds of everything else a run does (reads, lookups, bookkeeping)


@pytest.fixture
def hanging():
    state = {"writes hang": True}

    def decide(call):
        return ("hang",) if state["writes hang"] and (call.method, call.path) == ("PUT", "/v1/data") else None

    server = serve_misbehaving(decide)
    server.state = state
    yield server
    server.service.release.set()
    server.stop()


@pytest.mark.django_db(transaction=True)
def test_a_hanging_target_is_cut_off_classified_as_timeout_and_retried(make_mapping, org, hanging, settings,
                                                                       fault_figures):
    settings.RESYNC_ALLOW_PRIVATE_URLS = True
    settings.RESYNC_HTTP_TIMEOUT = TIMEOUT
    settings.RESYNC_HTTP_RETRY_DELAYS = [0.1, 0.1]  # production's in-request retries, shortened
    target = Connection(organization=org, name="Hanging CRM", provider="connector_service",
                        config={"url": hanging.url})
    target.credentials = {"signing_secret": SECRET}
    target.save()
    mapping = make_mapping(target=target, error_strategy="retry", retry_schedule=[RETRY_DELAY], batch_size=10)
    emails = sorted(person(n)["email"] for n in range(RECORDS))
    seed_records(mapping.source_connection, "contacts", [person(n) for n in range(RECORDS)])

    started = time.monotonic()
    first = run_mapping(mapping)  # the sweep after it finds nothing due yet: no retry while the target hangs
    took = time.monotonic() - started

    calls = hanging.service.calls
    hung = [call for call in calls if call.status == 0]
    # Each write was cut off by the timeout: the run lasted the hung calls' timeouts and little more.
    assert hung and took <= len(hung) * TIMEOUT + SLACK, (took, len(hung))
    errors = RecordError.objects.filter(run=first, level=ErrorLevel.RECORD)
    assert errors.count() == RECORDS == first.failed
    assert set(errors.values_list("category", "error_code", "retryable", "status")) == {
        ("timeout", "read_timeout", True, ErrorStatus.RETRY_SCHEDULED)}
    assert hanging.service.service.records("contacts") == []  # a hung call did nothing

    hanging.state["writes hang"] = False
    deadline = time.monotonic() + RETRY_DELAY + 30
    while RecordLink.objects.filter(mapping=mapping, status=LinkStatus.SYNCED).count() < RECORDS:
        assert time.monotonic() < deadline, list(RecordError.objects.filter(mapping=mapping).values_list(
            "status", "category", "next_retry_at")[:3])
        sweep_retries()  # the sweeper's task, every half second instead of every minute (tasks run inline)
        time.sleep(0.5)

    stored = sorted(record["data"]["email"] for record in hanging.service.service.records("contacts"))
    assert stored == emails
    assert set(errors.values_list("status", "resolution")) == {(ErrorStatus.RESOLVED, Resolution.AUTO_RETRY)}
    retries = SyncRun.objects.filter(mapping=mapping, trigger="retry")
    fault_figures(runs=1 + retries.count(), records=RECORDS, lost=RECORDS - len(set(stored)),
                  duplicates=len(stored) - len(set(stored)), refused=len(hung), retries=retries.count(),
                  first_run_seconds=round(took, 1), timeout=TIMEOUT)
