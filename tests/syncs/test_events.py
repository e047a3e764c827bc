"""Every sync event and record error is one JSON log line with the fields of seed 000's log design."""

import json
import logging
import uuid
from datetime import timedelta

import pytest
import time_machine

from integrations.connectors.sandbox import seed_records
from syncs import reaper
from syncs.events import JsonFormatter, log_event
from syncs.models import RecordError
from syncs.pause import mapping_pause
from syncs.services import sync_run_queue
from tests.syncs.helpers import person, run_mapping

pytestmark = pytest.mark.django_db


@pytest.fixture
def json_lines():
    """The resync logger's lines as the production formatter writes them."""
    lines = []

    class Collect(logging.Handler):
        def emit(self, record):
            lines.append(json.loads(JsonFormatter().format(record)))

    handler = Collect(level=logging.DEBUG)
    logger = logging.getLogger("resync.sync")
    logger.addHandler(handler)
    yield lines
    logger.removeHandler(handler)


def test_a_record_error_is_logged_with_every_field_operators_search_by(make_mapping, make_connection, json_lines):
    target = make_connection("Down", faults={"operations": ["write"], "failure_rate": 1.0, "failure_kind": "503"})
    mapping = make_mapping(target=target, error_strategy="retry", match_keys=[])
    (row,) = seed_records(mapping.source_connection, "contacts", [person(1)])

    run = run_mapping(mapping)

    (line,) = [line for line in json_lines if line["event"] == "record_failed"]
    assert line["level"] == "error"
    # Named by the ids the UI, the API and the command line show.
    (error,) = RecordError.objects.filter(run=run)
    assert (line["run"], line["error"], line["mapping"]) == (str(run.code), str(error.code), str(mapping.code))
    assert line["mapping_name"] == mapping.name
    assert line["record_id"] == row.external_id
    assert line["sync_target"] == "Down"
    assert line["error_type"] == "connection"
    assert line["error_message"]
    assert line["retry_count"] == 0
    assert line["will_retry"] is True
    assert line["timestamp"].endswith("Z")
    events = [line["event"] for line in json_lines]
    assert events[0] == "run_started" and events[-1] == "run_finished"
    assert json_lines[-1]["run"] == json_lines[0]["run"] == str(run.code)


@time_machine.travel("2026-11-22 12:00:00+00:00", tick=False)
def test_no_log_line_names_a_run_or_a_mapping_by_its_database_key(make_mapping, json_lines, monkeypatch):
    """An operator greps the log for the id the UI shows: every id in a line is a UUID, never a primary key."""
    monkeypatch.setattr(reaper, "async_task", lambda *args, **kwargs: None)
    mapping = make_mapping()
    seed_records(mapping.source_connection, "contacts", [person(1)])
    run = run_mapping(mapping)
    mapping_pause(mapping=mapping, reason="Paused for the test")
    lost = sync_run_queue(mapping=make_mapping(), enqueue=False)
    with time_machine.travel(lost.queued_at + timedelta(hours=1), tick=False):
        assert reaper.runs_reap() == [lost.pk]

    by_event = {line["event"]: line for line in json_lines}
    assert by_event["run_started"]["run"] == by_event["run_finished"]["run"] == str(run.code)
    assert by_event["run_finished"]["mapping"] == by_event["mapping_paused"]["mapping"] == str(mapping.code)
    assert by_event["runs_reaped"]["runs"] == [str(lost.code)]
    for line in json_lines:
        assert not [key for key in line if key.endswith("_id") and key not in NOT_KEYS], line
        for key in ("run", "mapping", "error"):
            if key in line:
                uuid.UUID(line[key])


# Fields ending in _id that are not Resync's keys: the record's id in its system, the sender's id of an event.
NOT_KEYS = {"record_id", "webhook_event_id"}


def test_secret_looking_fields_are_scrubbed_from_log_lines(json_lines):
    log_event("connection_checked", api_key="sk_live_secret", detail="Authorization: Bearer abc.def")

    (line,) = json_lines
    assert "sk_live_secret" not in json.dumps(line)
    assert "abc.def" not in json.dumps(line)
