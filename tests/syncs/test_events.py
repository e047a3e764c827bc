"""Every sync event and record error is one JSON log line with the fields of seed 000's log design."""

import json
import logging

import pytest

from integrations.connectors.sandbox import seed_records
from syncs.events import JsonFormatter, log_event
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

    run_mapping(mapping)

    (line,) = [line for line in json_lines if line["event"] == "record_failed"]
    assert line["level"] == "error"
    assert line["record_id"] == row.external_id
    assert line["sync_target"] == "Down"
    assert line["error_type"] == "connection"
    assert line["error_message"]
    assert line["retry_count"] == 0
    assert line["will_retry"] is True
    assert line["timestamp"].endswith("Z")
    events = [line["event"] for line in json_lines]
    assert events[0] == "run_started" and events[-1] == "run_finished"


def test_secret_looking_fields_are_scrubbed_from_log_lines(json_lines):
    log_event("connection_checked", api_key="sk_live_secret", detail="Authorization: Bearer abc.def")

    (line,) = json_lines
    assert "sk_live_secret" not in json.dumps(line)
    assert "abc.def" not in json.dumps(line)
