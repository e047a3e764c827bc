"""Bulk actions on record errors done by a worker: a retry, ignore or resolve of every error matching a filter, or
of a long list of ids.

The request records a BulkAction and answers at once; the task (syncs.tasks.run_bulk_action) claims it by id with a
conditional update, re-reads its filter inside its organization and calls the service a synchronous action calls
(errors_retry, errors_close), which count, claim and close set-based. The answer the synchronous action would have
given becomes the action's summary.

It is done a mapping at a time: each step acts on one mapping's errors and saves its checkpoint (the last mapping
done, the summary so far) in the same transaction, so a worker killed in a step loses that step whole (its
replays are never enqueued: they go on commit) and a takeover goes on after the checkpoint, never acting twice
on one error. A worker beats the action's heartbeat at every step; the reaper (syncs.reaper.bulk_actions_reap)
hands an action whose heartbeat stopped, or a queued one whose task was lost, to another worker. The claim gives
the action a new token, and a worker checks its token under a row lock at the start of each step: of two
workers only the one holding the current token acts.
"""

import logging
import uuid
from datetime import timedelta

from django.conf import settings
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import InterfaceError, OperationalError, transaction
from django.db.models import F, Min, Q
from django.db.models.functions import Coalesce
from django.utils import timezone
from django_q.tasks import async_task
from rest_framework.exceptions import ValidationError

from syncs.events import log_event
from syncs.filtersets import RecordErrorFilterSet
from syncs.models import BulkAction, BulkActionKind, BulkActionStatus, ErrorStatus, RecordError, Resolution, SyncRun
from syncs.retries import errors_retry
from syncs.review import errors_close

CLOSING = {BulkActionKind.IGNORE: ErrorStatus.IGNORED, BulkActionKind.RESOLVE: ErrorStatus.RESOLVED}

# An action whose worker died this many times is given up rather than handed on: what kills its workers (memory,
# a deadline) would kill the next one too.
MAX_ATTEMPTS = 3

GIVEN_UP = (f"Its worker stopped {MAX_ATTEMPTS} times while carrying it out; what was done before stays done. "
            "Request it again to act on the errors that still match.")


class _TakenOver(Exception):
    """Another worker claimed the action (this one was taken for dead): this one stops before its next step."""


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


def bulk_action_stale_before(now):
    """Heartbeats older than this are a dead worker's (RESYNC_HEARTBEAT_STALE_SECONDS, as for runs)."""
    return now - timedelta(seconds=settings.RESYNC_HEARTBEAT_STALE_SECONDS)


def takeover_allowed(now):
    """Running actions another worker may take: their worker went silent, and it has not died too often."""
    return Q(status=BulkActionStatus.RUNNING, heartbeat_at__lt=bulk_action_stale_before(now), attempts__lt=MAX_ATTEMPTS)


def bulk_action_claim(*, action_id, now=None):
    """Take a queued action, or a running one whose worker died; the claim token, or None if it is not ours.

    A worker in the middle of a step holds the action's row: it is alive whatever its heartbeat says, so its
    row is skipped, never waited for (PostgreSQL; SQLite serializes every write transaction anyway).
    """
    now = now or timezone.now()
    claimable = Q(status=BulkActionStatus.QUEUED) | takeover_allowed(now)
    token = uuid.uuid4()
    with transaction.atomic():
        if not BulkAction.objects.select_for_update(skip_locked=True).filter(claimable, pk=action_id).exists():
            return None
        claimed = BulkAction.objects.filter(claimable, pk=action_id).update(
            status=BulkActionStatus.RUNNING, claim_token=token, heartbeat_at=now, attempts=F("attempts") + 1,
            started_at=Coalesce("started_at", now))
    return token if claimed else None


def bulk_action_perform(*, action_id):
    """Carry out a queued action, or go on with one whose worker died; None when it is not ours (another worker
    has it, or it is done)."""
    token = bulk_action_claim(action_id=action_id)
    if token is None:
        log_event("bulk_action_claim_skipped", action=_code(action_id))
        return None
    action = BulkAction.objects.select_related("organization").get(pk=action_id)
    if action.attempts > 1:
        log_event("bulk_action_taken_over", level=logging.WARNING, action=str(action.code), attempts=action.attempts,
                  progress=action.progress)
    try:
        errors = _selected(action)
        while not _step(action, token, errors):
            pass
    except _TakenOver:
        log_event("bulk_action_taken_over_elsewhere", level=logging.WARNING, action=str(action.code))
        return None
    except (ValidationError, DjangoValidationError) as exc:
        # The filter no longer holds (its mapping or run was deleted since).
        done = _done_so_far(action.progress)
        _finish(action, token, status=BulkActionStatus.FAILED,
                failure=f"The selection is no longer valid: {'; '.join(_messages(exc))}{done}")
        return action
    except (OperationalError, InterfaceError):
        # Losing the database is no fault of the action: its heartbeat stops and the reaper hands it on; the step
        # under way was rolled back with the connection.
        logging.getLogger("resync.sync").warning("bulk_action_lost_database",
                                                 extra={"event": "bulk_action_lost_database"})
        raise
    except Exception:
        logging.getLogger("resync.sync").exception("bulk_action_crashed", extra={"event": "bulk_action_crashed"})
        _finish(action, token, status=BulkActionStatus.FAILED,
                failure="The action stopped on an unexpected internal error." + _done_so_far(action.progress))
        raise
    log_event("bulk_action_done", organization=action.organization.slug, action=str(action.code), kind=action.kind,
              summary=action.summary, attempts=action.attempts)
    return action


def _code(action_id):
    code = BulkAction.objects.filter(pk=action_id).values_list("code", flat=True).first()
    return str(code) if code else None


def _selected(action):
    """The organization's errors the action names: its ids, or what its filter matches now."""
    organization = action.organization
    if "ids" in action.selection:
        return RecordError.objects.for_org(organization).filter(pk__in=action.selection["ids"])
    return RecordErrorFilterSet.matching(action.selection["filter"], organization=organization)


def _step(action, token, errors):
    """Act on the next mapping's errors and save the checkpoint with it, in one transaction; True once done.

    The step starts by locking the action's row and checking the token: a worker that was taken for dead finds
    another's token and stops, and a takeover cannot claim the action while a step holds the row.
    """
    with transaction.atomic():
        progress = (BulkAction.objects.select_for_update()
                    .filter(pk=action.pk, status=BulkActionStatus.RUNNING, claim_token=token)
                    .values_list("progress", flat=True).first())
        if progress is None:
            raise _TakenOver
        after = progress.get("after_mapping")
        remaining = errors if after is None else errors.filter(mapping_id__gt=after)
        mapping_id = remaining.order_by().aggregate(next=Min("mapping_id"))["next"]
        now = timezone.now()
        if mapping_id is None:
            action.status, action.summary = BulkActionStatus.SUCCEEDED, progress.get("summary") or _nothing(action)
            action.finished_at = now
            BulkAction.objects.filter(pk=action.pk).update(status=action.status, summary=action.summary,
                                                           finished_at=now, heartbeat_at=now, claim_token=None)
            return True
        summary = _perform(action, mapping_id)
        action.progress = {"after_mapping": mapping_id, "summary": _merged(progress.get("summary"), summary)}
        BulkAction.objects.filter(pk=action.pk).update(progress=action.progress, heartbeat_at=now)
    return False


def _perform(action, mapping_id):
    """The synchronous action's answer for the errors it names of one mapping."""
    organization = action.organization
    if "ids" in action.selection:
        # Named ids get a reason for each one skipped (errors_retry tells them from "everything matching").
        selection = {"queryset": RecordError.objects.filter(mapping_id=mapping_id),
                     "error_ids": action.selection["ids"]}
    else:
        selection = {"queryset": _selected(action).filter(mapping_id=mapping_id)}
    if action.kind == BulkActionKind.RETRY:
        # Each replay claims its errors where it runs (retries_queue): the action is done once they are queued.
        summary = errors_retry(organization=organization, resolution=Resolution.BULK_RETRY,
                               force=bool(action.options.get("force")), claim_on_start=True, **selection)
        codes = dict(SyncRun.objects.for_org(organization).filter(pk__in=summary["runs"]).values_list("pk", "code"))
        return {**summary, "runs": [str(codes[pk]) for pk in summary["runs"]]}
    return errors_close(organization=organization, status=CLOSING[action.kind], note=action.options.get("note", ""),
                        **selection)


def _nothing(action):
    """The answer of an action that found no error to act on."""
    if action.kind == BulkActionKind.RETRY:
        return {"queued": 0, "runs": [], "skipped": {}}
    return {"closed": 0, "skipped": {}}


def _merged(before, step):
    """Two steps' summaries as one: counts added, runs listed in order, skip reasons added."""
    if not before:
        return step
    merged = {}
    for key in {**before, **step}:
        first, second = before.get(key), step.get(key)
        if isinstance(first, dict) or isinstance(second, dict):
            first, second = first or {}, second or {}
            merged[key] = {reason: first.get(reason, 0) + second.get(reason, 0) for reason in {**first, **second}}
        elif isinstance(first, list) or isinstance(second, list):
            merged[key] = [*(first or []), *(second or [])]
        else:
            merged[key] = (first or 0) + (second or 0)
    return merged


def _done_so_far(progress):
    """What the steps before a failure did, said after its reason (they are not undone)."""
    summary = (progress or {}).get("summary")
    if not summary:
        return ""
    done = summary.get("queued", summary.get("closed", 0))
    return f" Before that, {done} error(s) were {'queued for retry' if 'queued' in summary else 'closed'}."


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


def _finish(action, token, *, status, failure):
    """End the action as failed, if it is still this worker's (a takeover's outcome is its own)."""
    now = timezone.now()
    if BulkAction.objects.filter(pk=action.pk, claim_token=token).update(
            status=status, failure=failure, finished_at=now, claim_token=None):
        action.status, action.failure, action.finished_at = status, failure, now
