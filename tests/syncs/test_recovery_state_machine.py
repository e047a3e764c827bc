"""A Hypothesis state machine over everything that touches a record error: runs, scheduled retries, retrying one
error or all of them, editing in the review queue, ignoring, replaying a run's failures, while the source changes
and the target goes down and comes back.

After every step, whatever the order:
- every record error is in exactly one coherent state: closed errors carry a resolution and a time, open ones
  neither; no record has two unresolved errors in one mapping; nothing is left "retrying" once the work queued
  has run (tasks run inline here);
- no error has been retried automatically more often than its category's policy allows (a person's retry may go
  beyond it: that is their call, and the error is then exhausted, not scheduled again);
- a record is written to the target at most once per change: the same source version never lands twice, and
  no record is created twice.
The clock is Hypothesis's to move (time-machine), the source has six contacts, the target is the sandbox API.
"""

import contextlib
from datetime import timedelta

import pytest
import time_machine
from django.core.exceptions import ValidationError
from django.db import transaction
from django.test import TestCase
from django.utils import timezone
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from accounts.models import Organization
from integrations import sandbox_api
from integrations.connectors.sandbox import seed_records
from integrations.models import Connection, SandboxRecord
from mappings.models import ErrorStrategy, FieldMapping, Mapping
from syncs.chains import sync_run_retry_failures
from syncs.models import UNRESOLVED_ERROR_STATUSES, ErrorLevel, ErrorStatus, RecordError, RunStatus, SyncRun
from syncs.policy import retry_policy
from syncs.retries import error_retry, errors_retry, retries_sweep
from syncs.review import error_edit_and_retry, error_ignore
from tests.syncs.helpers import person, run_mapping

pytestmark = pytest.mark.django_db

CONTACTS = 6
CLOSED = (ErrorStatus.RESOLVED, ErrorStatus.IGNORED)
DOWN = {"operations": ["write", "find", "fetch"], "failure_rate": 1.0, "failure_kind": "503"}


def _queued_work_runs():
    # Services queue their runs on commit; the tests' transaction never commits, so run what they queued.
    return TestCase.captureOnCommitCallbacks(execute=True)


class RecoveryMachine(RuleBasedStateMachine):
    def __init__(self):
        super().__init__()
        # Each example in its own savepoint, rolled back in teardown: examples never see each other's rows.
        self.atomic = transaction.atomic()
        self.atomic.__enter__()
        self.clock = time_machine.travel(timezone.now(), tick=False)
        self.now = self.clock.start()
        self.versions = {}  # source record id → how many times its data has changed
        self.writes = []  # (email as written, source version) of every write the target accepted
        self.manual = {}  # source record id → retries a person asked for

    def teardown(self):
        self.clock.stop()
        transaction.set_rollback(True)
        self.atomic.__exit__(None, None, None)
        sandbox_api._write_all = self.real_write_all

    @initialize(strategy=st.sampled_from([ErrorStrategy.RETRY, ErrorStrategy.SKIP, ErrorStrategy.MANUAL_REVIEW]),
                broken=st.sets(st.integers(0, CONTACTS - 1), max_size=3), down=st.booleans())
    def set_up(self, strategy, broken, down):
        self.org = Organization.objects.create(name="Acme", slug="acme-machine")
        self.source = self._connection("Shop")
        self.target = self._connection("CRM")
        self.mapping = Mapping.objects.create(
            organization=self.org, name="Contacts", source_connection=self.source, source_object="contacts",
            target_connection=self.target, target_object="contacts", error_strategy=strategy,
            match_keys=[{"source": "email", "target": "email"}], max_retries=3)
        for position, field in enumerate(("email", "first_name", "last_name")):
            FieldMapping.objects.create(organization=self.org, mapping=self.mapping, source_field=field,
                                        target_field=field, position=position)
        rows = seed_records(self.source, "contacts", [person(n) for n in range(CONTACTS)])
        self.ids = [row.external_id for row in rows]
        self.emails = {row.external_id: row.data["email"] for row in rows}
        self.versions = dict.fromkeys(self.ids, 0)
        self._count_writes()
        # A first sync, so that every example starts from history: some records refused, maybe the target down.
        for index in broken:
            self.break_a_record(index)
        self.target_goes_down_or_up(down)
        self.run()

    def _connection(self, name):
        connection = Connection(organization=self.org, name=name, provider="sandbox", config={})
        connection.credentials = {"api_key": f"sk_test_{name.lower()}"}
        connection.save()
        return connection

    def _count_writes(self):
        """Every write the target stores, with the source version it came from (the record's last name says it)."""
        self.real_write_all = real = sandbox_api._write_all
        machine = self

        def counted(call, object_name, schema, operations):
            results = real(call, object_name, schema, operations)
            if call.connection.pk == machine.target.pk:
                for operation, result in zip(operations, results, strict=True):
                    if result and result.get("ok"):
                        data = (operation or {}).get("data") or {}
                        machine.writes.append((result.get("id") or operation.get("id"), data.get("last_name")))
            return results

        sandbox_api._write_all = counted

    # --- the world changes ------------------------------------------------------------------------------------

    def _edit_source(self, index, **changes):
        record_id = self.ids[index]
        self.versions[record_id] += 1
        row = SandboxRecord.objects.get(connection=self.source, external_id=record_id)
        # The version travels in the last name, so a write says which change it carries.
        row.data = {**row.data, **changes, "last_name": f"Last{index}-v{self.versions[record_id]}"}
        row.modified_at = timezone.now()
        row.save()

    @rule(index=st.integers(0, CONTACTS - 1))
    def change_a_record(self, index):
        self._edit_source(index, email=self.emails[self.ids[index]])

    @rule(index=st.integers(0, CONTACTS - 1))
    def break_a_record(self, index):
        self._edit_source(index, email="not-an-email")  # durable: the target refuses it

    @rule(down=st.booleans())
    def target_goes_down_or_up(self, down):
        self.target.config = {"faults": DOWN} if down else {}
        self.target.save(update_fields=["config"])

    @rule(minutes=st.sampled_from([1, 5, 31]))
    def time_passes_and_the_sweeper_runs(self, minutes):
        self.now.shift(timedelta(minutes=minutes))
        with _queued_work_runs():
            retries_sweep()

    # --- runs and operators ------------------------------------------------------------------------------------

    @rule()
    def run(self):
        with _queued_work_runs():
            run_mapping(self.mapping)

    @rule()
    def full_resync(self):
        # Reads every record again: those already written at their current version must not be written again.
        with _queued_work_runs():
            run_mapping(self.mapping, options={"full": True})

    @rule(index=st.integers(0, CONTACTS - 1))
    def fix_a_record_at_the_source_and_run(self, index):
        self.change_a_record(index)
        self.run()

    def _asked(self, *record_ids):
        for record_id in record_ids:
            self.manual[record_id] = self.manual.get(record_id, 0) + 1

    def _unresolved(self):
        return list(RecordError.objects.filter(mapping=self.mapping, status__in=UNRESOLVED_ERROR_STATUSES)
                    .order_by("pk"))

    @rule(pick=st.integers(0, 50))
    def retry_one(self, pick):
        errors = self._unresolved()
        if errors:
            error = errors[pick % len(errors)]
            self._asked(error.source_record_id)
            # A refusal with a reason (e.g. already retrying) is allowed, and changes nothing.
            with _queued_work_runs(), contextlib.suppress(ValidationError):
                error_retry(error=error)

    @rule()
    def retry_all(self):
        self._asked(*(error.source_record_id for error in self._unresolved()))
        with _queued_work_runs():
            errors_retry(organization=self.org, queryset=RecordError.objects.filter(mapping=self.mapping))

    @rule(pick=st.integers(0, 50))
    def fix_in_review_and_retry(self, pick):
        errors = [e for e in self._unresolved() if e.level == ErrorLevel.RECORD and e.snapshot_after]
        if errors:
            error = errors[pick % len(errors)]
            fixed = {**error.snapshot_after, "email": self.emails.get(error.source_record_id, "fixed@example.com")}
            self._asked(error.source_record_id)
            with _queued_work_runs(), contextlib.suppress(ValidationError):
                error_edit_and_retry(error=error, payload=fixed)

    @rule(pick=st.integers(0, 50))
    def ignore_one(self, pick):
        errors = self._unresolved()
        if errors:
            with contextlib.suppress(ValidationError):
                error_ignore(error=errors[pick % len(errors)], reason="Not needed")

    @rule()
    def replay_the_last_runs_failures(self):
        run = SyncRun.objects.filter(mapping=self.mapping, status__in=(RunStatus.PARTIALLY_FAILED,
                                                                        RunStatus.FAILED)).order_by("-pk").first()
        if run:
            self._asked(*(error.source_record_id for error in self._unresolved()))
            with _queued_work_runs(), contextlib.suppress(ValidationError):
                sync_run_retry_failures(run=run)

    # --- what must hold after every step -----------------------------------------------------------------------

    @precondition(lambda self: hasattr(self, "mapping"))
    @invariant()
    def every_error_is_in_one_coherent_state(self):
        errors = list(RecordError.objects.filter(mapping=self.mapping))
        for error in errors:
            assert error.status in ErrorStatus.values
            if error.status in CLOSED:
                assert error.resolution and error.resolved_at, (error.pk, error.status, error.resolution)
            else:
                assert not error.resolved_at, (error.pk, error.status)
            # Everything queued has run: an error still "retrying" was claimed by a retry that never came.
            assert error.status != ErrorStatus.RETRYING, (error.pk, error.category, error.resolution)
        unresolved = [(e.direction, e.source_record_id) for e in errors
                      if e.status in UNRESOLVED_ERROR_STATUSES and e.level == ErrorLevel.RECORD]
        assert len(unresolved) == len(set(unresolved)), sorted(unresolved)
        assert not SyncRun.objects.filter(mapping=self.mapping,
                                          status__in=(RunStatus.QUEUED, RunStatus.RUNNING)).exists()

    @precondition(lambda self: hasattr(self, "mapping"))
    @invariant()
    def no_error_is_retried_automatically_beyond_its_limit(self):
        for error in RecordError.objects.filter(mapping=self.mapping, attempts__gt=0):
            limit = retry_policy(self.mapping, error.category, retryable=error.retryable).attempts
            asked = self.manual.get(error.source_record_id, 0)
            assert error.attempts <= limit + asked, (error.category, error.attempts, limit, asked)

    @precondition(lambda self: hasattr(self, "mapping"))
    @invariant()
    def a_record_is_written_once_per_change(self):
        landed = [(record, version) for record, version in self.writes if version]
        assert len(landed) == len(set(landed)), sorted(landed)
        created = SandboxRecord.objects.filter(connection=self.target, object_name="contacts").count()
        assert created <= CONTACTS


RecoveryMachine.TestCase.settings = settings(
    max_examples=20, stateful_step_count=20, deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])


def test_recovery_state_machine(db):
    RecoveryMachine.TestCase("runTest").runTest()
