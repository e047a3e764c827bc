"""Writing: the planned records of a batch go to the far side in as few calls as it allows, and each result
becomes the record's outcome.

Writer writes for real: at most the connector's batch size per call; a call that fails as a whole is split and
sent again (down to single records) so the failures left are the records' own; a duplicate is resolved by the
match keys (seed 000: found → link and update); an update of a record deleted on the far side creates it again
when the mapping says so. PlanWriter, for test runs, writes nothing: it notes what would be written, next to the
far side's current values.
"""

import contextlib

from integrations.connectors.base import WriteAction, WriteOperation
from integrations.errors import ConnectorError, ErrorCategory

# After this many failed calls in a row the far side is taken to be down: the rest fail at once (retried later).
MAX_FAILED_CALLS_IN_A_ROW = 3


class Writer:
    def __init__(self, context, planner):
        self.context = context
        self.planner = planner

    def write(self, sync_pass, items, outcome):
        context = self.context
        retry_duplicates, recreate = [], []
        for item, result in self.write_call(sync_pass, items, outcome):
            if result.ok:
                outcome.succeeded(item, result)
            elif context.call_failed(result.error, sync_pass.far_connection):
                continue  # left untried: the run halts
            elif (result.error.category == ErrorCategory.DUPLICATE and item.action == WriteAction.CREATE
                  and sync_pass.match_keys):
                retry_duplicates.append((item, result.error))
            elif (result.error.category == ErrorCategory.NOT_FOUND and item.action == WriteAction.UPDATE
                  and context.mapping.create_if_missing):
                recreate.append(item)
            else:
                outcome.fail(item, [result.error])
        second_round = []
        if retry_duplicates:
            # Seed 000: "search the existing record by the match key; found → link and update, else a duplicate".
            dup_items = [item for item, _error in retry_duplicates]
            for item in dup_items:
                item.far_id = None
            self.planner.lookup(sync_pass, dup_items, outcome)
            if context.halt:
                return
            for item, error in retry_duplicates:
                if item.done:
                    continue
                if item.far_id is None:
                    outcome.fail(item, [error])
                else:
                    item.action = WriteAction.UPDATE
                    second_round.append(item)
        for item in recreate:
            item.action, item.far_id = WriteAction.CREATE, None
            second_round.append(item)
        for item, result in self.write_call(sync_pass, second_round, outcome):
            if result.ok:
                outcome.succeeded(item, result)
            elif not context.call_failed(result.error, sync_pass.far_connection):
                outcome.fail(item, [result.error])

    def write_call(self, sync_pass, items, outcome):
        """Write `items` in as few calls as the target allows; (item, result) for every record it answered for.

        A call that fails as a whole on a transient error (or on a validation error of the whole batch) does not
        sink every record of it: its halves are sent again, down to single records, so the failures that remain
        are the records' own. Retry-After is waited for (up to RESYNC_INLINE_RETRY_AFTER_MAX seconds); after
        MAX_FAILED_CALLS_IN_A_ROW failed calls the target is taken to be down and the rest fail at once, to be
        retried later. A create that may have been carried out before the failure is looked up by the match keys
        before it is sent again, and not sent again when there are none: RecordLink cannot see what a lost
        answer created.
        """
        context = self.context
        size = max(1, int(sync_pass.far.max_write_batch))
        pairs, failed_in_a_row = [], 0
        groups = [list(items[start:start + size]) for start in range(0, len(items), size)]
        while groups and not context.halt:
            group = [item for item in groups.pop(0) if not item.done]
            if not group:
                continue
            operations = [
                WriteOperation(ref=item.record.id, action=item.action, data=item.payload, target_id=item.far_id)
                for item in group
            ]
            context.heartbeat.beat(batch=outcome.batch, force=False)
            try:
                results = sync_pass.far.write(sync_pass.far_object, operations)
            except ConnectorError as exc:
                if context.call_failed(exc, sync_pass.far_connection):
                    break
                failed_in_a_row += 1
                if not self.worth_splitting(exc, group):
                    outcome.fail_all(group, exc)
                    continue
                if failed_in_a_row >= MAX_FAILED_CALLS_IN_A_ROW or not context.wait_for_retry_after(exc, outcome.batch):
                    for rest in (group, *groups):
                        outcome.fail_all(rest, exc)
                    break
                if exc.may_have_applied:
                    self.find_lost_creates(sync_pass, group, exc, outcome)
                group = [item for item in group if not item.done]
                half = (len(group) + 1) // 2
                groups[:0] = [part for part in (group[:half], group[half:]) if part]
                continue
            failed_in_a_row = 0
            by_ref = {result.ref: result for result in results}
            for item in group:
                result = by_ref.get(item.record.id)
                if result is None:
                    # Never lose a record silently: a connector that forgot one answers for it as an error.
                    outcome.fail(item, [ConnectorError(ErrorCategory.UNKNOWN, "The target did not report on "
                                                       "this record", code="missing_result")])
                else:
                    pairs.append((item, result))
        return pairs

    @staticmethod
    def worth_splitting(exc, group):
        """A smaller call may get through: the failure was transient, or the target refused the whole batch
        for what may be one record's data."""
        if len(group) == 1:
            return False
        return exc.retryable or exc.category in (ErrorCategory.VALIDATION, ErrorCategory.DUPLICATE)

    def find_lost_creates(self, sync_pass, group, exc, outcome):
        """Creates of a call that may have been carried out: look them up before sending them again."""
        creates = [item for item in group if item.action == WriteAction.CREATE]
        if not creates:
            return
        if not sync_pass.match_keys:
            outcome.fail_all(creates, exc)
            return
        self.planner.lookup(sync_pass, creates, outcome)
        for item in creates:
            if not item.done and item.far_id is not None:
                item.action = WriteAction.UPDATE


class PlanWriter(Writer):
    """A test run's writer: nothing is written; each record's plan entry shows the far side's current values,
    fetched best effort, next to what a real run would write."""

    def write(self, sync_pass, items, outcome):
        unseen = [item for item in items if item.action == WriteAction.UPDATE and item.far_record is None]
        if unseen:
            with contextlib.suppress(ConnectorError, NotImplementedError):
                current = sync_pass.far.fetch(sync_pass.far_object, [item.far_id for item in unseen])
                for item in unseen:
                    item.far_record = current.get(item.far_id)
        for item in items:
            outcome.planned(item)
