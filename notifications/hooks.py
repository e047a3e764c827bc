"""The calls other apps make when something alerts may be about. Each one observes and writes rows only, and
never raises: a notification problem must not break the sync, the reconnect or the pause that reported it."""

import logging

from django.db import transaction

from syncs.events import log_event

logger = logging.getLogger("resync.notifications")


def _guarded(name, call):
    try:
        # A savepoint: a database error here rolls back the notification's rows only, not the caller's work.
        with transaction.atomic():
            return call()
    except Exception:
        logger.exception("notification hook failed")
        log_event("notification_hook_failed", level=logging.ERROR, hook=name)
        return []


def run_finished(run):
    from notifications.alerts import notify_run_finished

    return _guarded("run_finished", lambda: notify_run_finished(run))


def connection_needs_reauth(connection):
    from notifications.alerts import notify_connection_needs_reauth

    return _guarded("connection_needs_reauth", lambda: notify_connection_needs_reauth(connection))


def mapping_auto_paused(mapping):
    from notifications.alerts import notify_mapping_auto_paused

    return _guarded("mapping_auto_paused", lambda: notify_mapping_auto_paused(mapping))
