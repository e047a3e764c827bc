"""Structured JSON log lines for sync events and record errors (seed 000's log design).

One line per event: timestamp, level, event, and the event's fields (run, mapping, record id, sync target,
error type, error message, retry count, will retry). Values under secret-looking keys are scrubbed.

Resync's objects are named by the ids the UI, the API and the command line show (their UUID `code`), never by a
primary key, in a field named after the object: `run` (and `runs`), `error`, `mapping`, `connection`, `action`
(a bulk action), `webhook_event`, `endpoint`; a name goes next to its id (`mapping_name`, `connection_name`).
`record_id` is the record's id in its own system and `webhook_event_id` the sender's id of an event. Callers
format ids from objects they already hold: the engine's lines, one per record error, cost no query.
"""

import json
import logging
from datetime import UTC, datetime

from integrations.redaction import scrub

logger = logging.getLogger("resync.sync")


class JsonFormatter(logging.Formatter):
    def format(self, record):
        line = {
            "timestamp": datetime.fromtimestamp(record.created, tz=UTC).isoformat().replace("+00:00", "Z"),
            "level": record.levelname.lower(),
            "event": getattr(record, "event", record.getMessage()),
        }
        line.update(scrub(getattr(record, "fields", {})))
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str)


def log_event(event, *, level=logging.INFO, **fields):
    logger.log(level, event, extra={"event": event, "fields": fields})
