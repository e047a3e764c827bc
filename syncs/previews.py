"""Runs in this process that write nothing (or just a sample): a mapping's test sync and a replay's preview."""

from mappings.services import MappingBusy
from syncs.engine import sync_run_execute
from syncs.models import ErrorLevel, RecordError, Trigger
from syncs.retries import RETRIABLE_LEVELS
from syncs.services import mapping_active_run, sync_run_queue


def mapping_test_sync(*, mapping, sample_size=10, write=False):
    """A run of `sample_size` records in this process. Without `write` nothing is written: the run's
    plan says, per record, what a real run would do. With it, just that sample is written.
    The cursor never moves."""
    if write and mapping_active_run(mapping) is not None:
        # Writing the sample while another run writes would race on the mapping's record links.
        raise MappingBusy("A run of this mapping is queued or running: test with write once it is done.")
    run = sync_run_queue(mapping=mapping, trigger=Trigger.TEST, is_test=not write, enqueue=False,
                         options={"sample_size": int(sample_size), "full": True})
    sync_run_execute(run_id=run.pk)
    run.refresh_from_db()
    return run


def errors_replay_preview(*, organization, error_ids):
    """What a replay of these errors would write, per record, next to the target's current values.

    Runs the replay as a test run in this process: nothing is written and no error changes state.
    """
    errors = RecordError.objects.for_org(organization).filter(pk__in=list(error_ids), level__in=RETRIABLE_LEVELS)
    plans = []
    for mapping_id in sorted(set(errors.values_list("mapping_id", flat=True))):
        group = errors.filter(mapping_id=mapping_id)
        mapping = group.first().mapping
        run = sync_run_queue(mapping=mapping, trigger=Trigger.TEST, is_test=True, enqueue=False, options={
            "errors": list(group.filter(level=ErrorLevel.RECORD).values_list("pk", flat=True)),
            "batches": list(group.filter(level=ErrorLevel.BATCH).values_list("batch_id", flat=True)),
            "preview": True,
        })
        sync_run_execute(run_id=run.pk)
        run.refresh_from_db()
        plans.extend(run.plan)
    return plans

