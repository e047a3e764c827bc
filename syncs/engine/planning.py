"""Planning: what to do with each record of a batch, decided before anything is written.

Per record: the mapping's filters (ignored on purpose, with the reason), unchanged since the last sync (the near
side's hash), an operator's correction, transforms and validation against the far schema (defaults, auto-fix,
skip-invalid), then per batch: matching to the far record (the link, else the match keys: one lookup per key),
duplicates within the source, a far record changed since a replayed record failed (safe replay), and two-way
conflicts settled by the mapping's policy. What comes out is each record's action (create or update) and
payload, or its outcome (ignored, skipped, unchanged, failed) written into the batch's outcome.
"""

import dataclasses
from datetime import datetime

from django.utils import timezone

from integrations.connectors.base import SourceRecord, WriteAction
from integrations.errors import ConnectorError, ErrorCategory
from mappings.models import ConflictPolicy, WriteMode
from syncs.engine.passes import FORWARD, LINK_COLUMNS, REVERSE, record_hash
from syncs.engine.writing import MAX_FAILED_CALLS_IN_A_ROW
from syncs.models import UNRESOLVED_ERROR_STATUSES, ErrorLevel, ErrorStatus, LinkStatus, RecordError, RecordLink


@dataclasses.dataclass
class Item:
    """One record travelling through a batch."""

    record: SourceRecord
    link: RecordLink | None = None
    payload: dict | None = None
    far_id: str | None = None
    far_record: SourceRecord | None = None
    action: str | None = None  # create / update
    warnings: list = dataclasses.field(default_factory=list)
    done: bool = False
    # An operator's corrected payload (written as is, after validation), and, in a replay, when the record last
    # failed (a far record modified after that is not overwritten without force).
    preset_payload: dict | None = None
    failed_at: datetime | None = None
    near_hash: str | None = None  # the record's hash, once computed (prepare)


def _is_empty(value):
    return value is None or (isinstance(value, str) and not value.strip())


def filter_reason(filters, data):
    """The reason of the first mapping filter that ignores this record, or None."""
    for rule in filters or ():
        value = data.get(rule.get("field", ""))
        op = rule.get("op", "equals")
        expected = rule.get("value")
        if op == "empty":
            hit = _is_empty(value)
        elif op == "not_empty":
            hit = not _is_empty(value)
        elif op == "equals":
            hit = value == expected
        elif op == "not_equals":
            hit = value != expected
        elif op == "contains":
            hit = isinstance(value, str) and str(expected).lower() in value.lower()
        elif op == "in":
            hit = value in (expected or [])
        elif op == "not_in":
            hit = value not in (expected or [])
        else:
            hit = False
        if hit:
            return rule.get("reason") or f"Filtered out: {rule.get('field')} {op} {expected!r}"
    return None


def operator_edits(context, sync_pass, records):
    """record id -> (edited payload, edited at) of the records' open errors an operator corrected."""
    if not records or not context.mapping_has_edits():
        return {}
    rows = RecordError.objects.filter(
        mapping=context.mapping, direction=sync_pass.direction, level=ErrorLevel.RECORD,
        status__in=UNRESOLVED_ERROR_STATUSES, edited_payload__isnull=False,
        source_record_id__in=[record.id for record in records],
    ).order_by("edited_at").values_list("source_record_id", "edited_payload", "edited_at")
    return {record_id: (payload, edited_at or timezone.now()) for record_id, payload, edited_at in rows}


class Planner:
    """Decides, record by record and then batch by batch, what a pass does with what it read."""

    def __init__(self, context):
        self.context = context
        self.mapping = context.mapping

    # -- per record --------------------------------------------------------------------------------------------

    def skim(self, sync_pass, records):
        """(the records of a page that are not unchanged since Resync last synced them, the page's links). The
        records of a page that are not unchanged since Resync last synced them: an unchanged record costs
        its hash and a look at its link, nothing else. The decision is prepare()'s, taken early: a record a filter
        ignores is not unchanged (its outcome is written down), nor one whose last sync did not succeed."""
        rows = sync_pass.link_rows(organization=self.context.org, mapping=self.mapping,
                                   near_ids=[r.id for r in records])
        status = LINK_COLUMNS.index("status")
        changed, links = [], {}
        for record in records:
            row = rows.get(record.id)
            if (row is None or row[status] != LinkStatus.SYNCED or filter_reason(sync_pass.filters, record.data)
                    or sync_pass.row_near_hash(row) != record_hash(record.data, sync_pass.near_fields)):
                changed.append(record)
                if row is not None:
                    links[record.id] = sync_pass.link_from_row(row)
        return changed, links

    def prepare(self, sync_pass, item, outcome):
        record, link = item.record, item.link
        if item.preset_payload is not None:
            self.prepare_preset(sync_pass, item, outcome)
            return
        reason = filter_reason(sync_pass.filters, record.data)
        if reason:
            outcome.ignore(item, reason)
            return
        if sync_pass.direction == REVERSE and link is not None and self.context.conflicted(link.pk):
            outcome.skip(item)  # settled by the forward pass's conflict policy: manual review
            return
        # The near side has not changed since Resync last wrote or read it: unchanged, or our own echo.
        near_hash = item.near_hash = record_hash(record.data, sync_pass.near_fields)
        if link is not None and link.status == LinkStatus.SYNCED and sync_pass.link_near_hash(link) == near_hash:
            outcome.unchanged(item)
            return
        if not self.transform(sync_pass, item, outcome):
            return
        far_id = sync_pass.link_far_id(link) if link is not None else ""
        if (link is not None and link.status == LinkStatus.SYNCED and far_id
                and sync_pass.link_far_hash(link) == record_hash(item.payload, sync_pass.far_fields)):
            outcome.unchanged(item, near_hash=near_hash)  # a change of a field the mapping does not write
            return
        if far_id:
            item.far_id = far_id

    def transform(self, sync_pass, item, outcome):
        """item.payload from the record through the pass's compiled plan: transforms, then the far schema's
        checks (defaults, required, auto-fix); False (and the record failed) when it does not fit. A problem
        of a skip-invalid field is a warning, and the field is left out."""
        return self._prepared(item, outcome, sync_pass.plan.apply(item.record.data))

    def prepare_preset(self, sync_pass, item, outcome):
        """An operator's corrected record skips filters and transforms, but not validation."""
        if self._prepared(item, outcome, sync_pass.plan.validate_corrected(item.preset_payload)) and item.link:
            item.far_id = sync_pass.link_far_id(item.link) or None

    @staticmethod
    def _prepared(item, outcome, prepared):
        item.payload = prepared.payload
        item.warnings.extend(prepared.warnings)
        if not prepared.ok:
            outcome.fail(item, prepared.errors)
            return False
        return True

    # -- per batch ---------------------------------------------------------------------------------------------

    def match(self, sync_pass, items, outcome):
        """The action of each record: update the far record it is linked or matched to, else create one."""
        unlinked = [item for item in items if item.far_id is None]
        if unlinked and sync_pass.match_keys:
            self.lookup(sync_pass, unlinked, outcome)
            if self.context.halt:
                return
        claimed = {}
        for item in items:
            if item.done:
                continue
            if item.far_id is not None:
                if item.far_id in claimed and claimed[item.far_id] is not item:
                    outcome.fail(item, [self.duplicate_in_source(sync_pass, item, claimed[item.far_id])])
                    continue
                claimed[item.far_id] = item
                if self.mapping.write_mode == WriteMode.CREATE_ONLY:
                    outcome.ignore(item, "Create-only mapping: the record already exists in the target")
                    continue
                item.action = WriteAction.UPDATE
            else:
                if self.mapping.write_mode == WriteMode.UPDATE_ONLY:
                    outcome.ignore(item, "Update-only mapping: no matching record in the target")
                    continue
                item.action = WriteAction.CREATE
        # Two new records with the same match value would become two target records: keep the first.
        seen = {}
        for item in items:
            if item.done or item.action != WriteAction.CREATE:
                continue
            key = self.match_value(sync_pass, item)
            if key is None:
                continue
            if key in seen:
                outcome.fail(item, [self.duplicate_in_source(sync_pass, item, seen[key])])
            else:
                seen[key] = item

    def lookup(self, sync_pass, items, outcome):
        """Set item.far_id from the far system for items whose match-key value is found exactly once."""
        context = self.context
        pending = list(items)
        for _near_field, far_field in sync_pass.match_keys:
            values = {item.payload.get(far_field) for item in pending if not _is_empty(item.payload.get(far_field))}
            if not values:
                continue
            found, failed = self.far_read(
                sync_pass, lambda part, f=far_field: sync_pass.far.find(sync_pass.far_object, f, part),
                sorted(values, key=str), outcome)
            if found is None:
                return
            for item in pending:
                if item.payload.get(far_field) in failed:
                    outcome.fail(item, [failed[item.payload.get(far_field)]])
            pending = [item for item in pending if not item.done]
            linked_elsewhere = sync_pass.far_ids_linked(
                organization=context.org, mapping=context.mapping, far_ids=[r.id for rs in found.values() for r in rs])
            still_pending = []
            for item in pending:
                candidates = found.get(item.payload.get(far_field), [])
                if len(candidates) > 1:
                    outcome.fail(item, [ConnectorError(
                        ErrorCategory.DUPLICATE,
                        f"{len(candidates)} records in {sync_pass.far_object} have {far_field} = "
                        f"{item.payload.get(far_field)!r}; cannot tell which one to update",
                        code="ambiguous_match", field=far_field,
                        detail="matching ids: " + ", ".join(c.id for c in candidates[:10]),
                    )])
                elif len(candidates) == 1:
                    other = linked_elsewhere.get(candidates[0].id)
                    if other is not None and other != item.record.id:
                        outcome.fail(item, [ConnectorError(
                            ErrorCategory.DUPLICATE,
                            f"The {sync_pass.far_object} record with {far_field} = {item.payload.get(far_field)!r} "
                            f"is already linked to record {other}",
                            code="already_linked", field=far_field,
                        )])
                    else:
                        item.far_id = candidates[0].id
                        item.far_record = candidates[0]
                else:
                    still_pending.append(item)
            pending = still_pending

    def far_fetch(self, sync_pass, far_ids, outcome):
        return self.far_read(sync_pass, lambda part: sync_pass.far.fetch(sync_pass.far_object, part), far_ids,
                             outcome)

    def far_read(self, sync_pass, call, keys, outcome):
        """`call(part)`, a find or fetch of the far side answering a dict, for every key of `keys`.

        Reads are split like writes (Writer.write_call): a call that fails on a transient error is sent again
        in halves, down to single keys, after any Retry-After, so one failed lookup does not fail every record
        of the batch and use up their retries together; after MAX_FAILED_CALLS_IN_A_ROW failures in a row the
        far side is taken to be down. Returns (answers, failed: key -> its error), or (None, {}) when the run
        halts (credentials refused).
        """
        answers, failed, failed_in_a_row = {}, {}, 0
        parts = [list(keys)] if keys else []
        while parts:
            part = parts.pop(0)
            try:
                answers.update(call(part))
            except ConnectorError as exc:
                if self.context.call_failed(exc, sync_pass.far_connection):
                    return None, {}
                failed_in_a_row += 1
                down = failed_in_a_row >= MAX_FAILED_CALLS_IN_A_ROW
                if (down or len(part) == 1 or not exc.retryable
                        or not self.context.wait_for_retry_after(exc, outcome.batch)):
                    for rest in (part, *parts) if down else (part,):
                        failed.update(dict.fromkeys(rest, exc))
                    if down:
                        break
                    continue
                half = (len(part) + 1) // 2
                parts[:0] = [part[:half], part[half:]]
                continue
            failed_in_a_row = 0
        return answers, failed

    @staticmethod
    def match_value(sync_pass, item):
        values = tuple(item.payload.get(far) for _near, far in sync_pass.match_keys)
        return None if all(_is_empty(v) for v in values) else values

    @staticmethod
    def duplicate_in_source(sync_pass, item, first):
        return ConnectorError(
            ErrorCategory.DUPLICATE,
            f"Record {first.record.id} of {sync_pass.near_object} matches the same target record; "
            f"only the first is synced",
            code="duplicate_in_source", field=sync_pass.match_keys[0][1] if sync_pass.match_keys else "",
        )

    def detect_target_changes(self, sync_pass, items, outcome):
        """Safe replay: a far record modified after the failure is not overwritten without force."""
        candidates = [item for item in items if item.action == WriteAction.UPDATE and item.far_id
                      and item.failed_at is not None]
        if not candidates:
            return
        missing = [item.far_id for item in candidates if item.far_record is None]
        current, failed = self.far_fetch(sync_pass, missing, outcome)
        if current is None:
            return
        for item in candidates:
            if item.far_id in failed:
                outcome.fail(item, [failed[item.far_id]])
                continue
            far_record = item.far_record or current.get(item.far_id)
            if far_record is None:
                continue
            item.far_record = far_record
            if record_hash(far_record.data, sync_pass.far_fields) == record_hash(item.payload, sync_pass.far_fields):
                continue  # it already holds what the replay would write (an earlier attempt's answer was lost)
            if far_record.modified_at and far_record.modified_at > item.failed_at:
                outcome.fail(item, [ConnectorError(
                    ErrorCategory.CONFLICT,
                    f"{sync_pass.far_object} record {item.far_id} changed after this record failed; "
                    "replaying would overwrite that change. Retry with force to overwrite it.",
                    code="target_changed", retryable=False,
                    detail=f"failed at {item.failed_at.isoformat()}, target modified at "
                           f"{far_record.modified_at.isoformat()}",
                )], force_status=ErrorStatus.IN_REVIEW)

    def detect_conflicts(self, sync_pass, items, outcome):
        """Two-way: a record changed on both sides since the last sync is a conflict, settled by the policy."""
        linked = [item for item in items if item.link is not None and item.link.status == LinkStatus.SYNCED
                  and item.action == WriteAction.UPDATE]
        if not linked:
            return
        current, failed = self.far_fetch(sync_pass, [item.far_id for item in linked], outcome)
        if current is None:
            return
        policy = self.mapping.conflict_policy
        for item in linked:
            if item.far_id in failed:
                outcome.fail(item, [failed[item.far_id]])
                continue
            far_record = current.get(item.far_id)
            if far_record is None:
                continue  # deleted on the far side: the update answers not_found, handled by create_if_missing
            item.far_record = far_record
            if record_hash(far_record.data, sync_pass.far_fields) == sync_pass.link_far_hash(item.link):
                continue  # only the near side changed: no conflict
            near_wins = {
                ConflictPolicy.SOURCE_WINS: sync_pass.direction == FORWARD,
                ConflictPolicy.TARGET_WINS: sync_pass.direction == REVERSE,
            }.get(policy)
            if policy == ConflictPolicy.NEWEST_WINS:
                near_time, far_time = item.record.modified_at, far_record.modified_at
                near_wins = near_time is not None and (far_time is None or near_time >= far_time)
            if policy == ConflictPolicy.MANUAL:
                self.context.conflicted_links.add(item.link.pk)
                outcome.fail(item, [ConnectorError(
                    ErrorCategory.CONFLICT, f"Record {item.record.id} changed in both systems since the last sync",
                    code="both_changed", retryable=False,
                )], force_status=ErrorStatus.IN_REVIEW)
            elif not near_wins:
                outcome.skip(item)
