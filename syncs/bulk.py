"""Bulk actions on record errors done by a worker: a retry, ignore or resolve of every error matching a filter, or
of a long list of ids.

The request records a BulkAction and answers at once; the task (syncs.tasks.run_bulk_action) takes it by id with a
conditional update, re-reads its filter inside its organization and calls the service a synchronous action calls
(errors_retry, errors_close), which count, claim and close set-based. The answer the synchronous action would have
given becomes the action's summary.
"""

import logging

from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import transaction
from django.utils import timezone
from django_q.tasks import async_task
from rest_framework.exceptions import ValidationError

from syncs.events import log_event
from syncs.filtersets import RecordErrorFilterSet
from syncs.models import BulkAction, BulkActionKind, BulkActionStatus, ErrorStatus, Resolution, SyncRun
from syncs.retries import errors_retry
from syncs.review import errors_close

CLOSING = {BulkActionKind.IGNORE: ErrorStatus.IGNORED, BulkActionKind.RESOLVE: ErrorStatus.RESOLVED}


def bulk_action_request(*, organization, kind, selection, options=None):
    """Record a bulk action and hand it to the workers once the transaction commits.

    `selection` is {"filter": {...}} (the errors list's query, already validated) or {"ids": [primary keys of
    the organization's errors]}; `options` are the action's own: force (retry), note (ignore and resolve).
    """
    action = BulkAction.objects.create(organization=organization, kind=kind, selection=selection,
                                       options=options or {})
    transaction.on_commit(lambda: async_task("syncs.tasks.run_bulk_action", action.pk,
                                             task_name=f"bulk-action-{action.pk}"))
    log_event("bulk_action_requested", organization=organization.slug, action=str(action.code), kind=kind)
    return action


def bulk_action_perform(*, action_id):
    """Carry out a queued bulk action; None when it is not queued (another worker took it, or it is done)."""
    now = timezone.now()
    if not BulkAction.objects.filter(pk=action_id, status=BulkActionStatus.QUEUED).update(
            status=BulkActionStatus.RUNNING, started_at=now):
        return None  # Nothing got updated: another worker got there first.
    action = BulkAction.objects.select_related("organization").get(pk=action_id)
    try:
        summary = _perform(action)
    except (ValidationError, DjangoValidationError) as exc:
        # The filter no longer holds (its mapping or run was deleted since): nothing was done.
        _finish(action, status=BulkActionStatus.FAILED,
                failure=f"The selection is no longer valid: {'; '.join(_messages(exc))}")
        return action
    except Exception:
        logging.getLogger("resync.sync").exception("bulk_action_crashed", extra={"event": "bulk_action_crashed"})
        _finish(action, status=BulkActionStatus.FAILED, failure="The action stopped on an unexpected internal error.")
        raise
    _finish(action, status=BulkActionStatus.SUCCEEDED, summary=summary)
    log_event("bulk_action_done", organization=action.organization.slug, action=str(action.code), kind=action.kind,
              summary=summary)
    return action


def _perform(action):
    organization = action.organization
    if "ids" in action.selection:
        selection = {"error_ids": action.selection["ids"]}
    else:
        selection = {"queryset": RecordErrorFilterSet.matching(action.selection["filter"],
                                                                organization=organization)}
    if action.kind == BulkActionKind.RETRY:
        # Each replay claims its errors where it runs (retries_queue): the action is done once they are queued.
        summary = errors_retry(organization=organization, resolution=Resolution.BULK_RETRY,
                               force=bool(action.options.get("force")), claim_on_start=True, **selection)
        codes = dict(SyncRun.objects.for_org(organization).filter(pk__in=summary["runs"]).values_list("pk", "code"))
        return {**summary, "runs": [str(codes[pk]) for pk in summary["runs"]]}
    return errors_close(organization=organization, status=CLOSING[action.kind], note=action.options.get("note", ""),
                        **selection)


def _messages(exc):
    """"field: message" lines of a validation error, however nested."""
    detail = exc.detail if isinstance(exc, ValidationError) else getattr(exc, "message_dict", exc.messages)

    def walk(value, path):
        if isinstance(value, dict):
            for key, inner in value.items():
                yield from walk(inner, key if key != "filter" else path)
        elif isinstance(value, list | tuple):
            for inner in value:
                yield from walk(inner, path)
        else:
            yield f"{path}: {value}" if path else str(value)

    return list(walk(detail, ""))


def _finish(action, *, status, summary=None, failure=""):
    action.status, action.summary, action.failure, action.finished_at = status, summary, failure, timezone.now()
    action.save(update_fields=["status", "summary", "failure", "finished_at"])
