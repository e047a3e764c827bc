"""Each rule with the clock controlled: it fires exactly when its condition starts, stays quiet during its
cooldown, reminds once the cooldown has passed, and sends the recovery notice when the condition clears. A run
with thousands of errors sends one message, at a number of queries that does not grow with them."""

import pytest
from django.core import mail
from django.db import connection as db_connection
from django.test.utils import CaptureQueriesContext

from integrations.connectors.sandbox import seed_records
from integrations.errors import ConnectorError, ErrorCategory
from integrations.models import ConnectionStatus
from integrations.services import connection_needs_reauth
from mappings.services import mapping_delete
from notifications.alerts import notifications_sweep, notify_run_finished
from notifications.models import Alert, AlertState, ChannelKind, Condition, Delivery, DeliveryStatus, Level, Scope
from notifications.services import channel_create, rule_create
from syncs.models import LinkStatus, RecordLink, RunStatus
from syncs.pause import mapping_resume
from tests.syncs.helpers import person, run_mapping

pytestmark = pytest.mark.django_db


@pytest.fixture
def team_email(org):
    channel, _secret = channel_create(organization=org, name="Team", kind=ChannelKind.EMAIL,
                                      recipients=["ops@acme.example"])
    return channel


@pytest.fixture
def make_rule(org, team_email):
    def make(condition, **fields):
        fields.setdefault("name", f"{condition} rule")
        return rule_create(organization=org, condition=condition, channels=[team_email], **fields)

    return make


def subjects():
    return [message.subject for message in mail.outbox]


def sweep(queued):
    with queued():
        return notifications_sweep()


# --- every error: batched per run -------------------------------------------------------------------------------


def test_a_run_with_thousands_of_errors_sends_one_message(clock, make_mapping, make_rule, finish_run):
    mapping = make_mapping()
    make_rule(Condition.EVERY_ERROR)

    run, _changed = finish_run(mapping, errors=5000)

    assert len(mail.outbox) == 1
    message = mail.outbox[0]
    assert message.subject == f"[Resync] [WARNING] 5000 errors syncing {mapping.name}"
    assert "5000 record errors" in message.body and "5000 of 5010 records failed" in message.body
    assert f"/runs/{run.code}/" in message.body
    assert Delivery.objects.count() == 1
    alert = Alert.objects.get()
    assert (alert.state, alert.details["counts"]["errors"], alert.run) == (AlertState.FIRING, 5000, run)


def test_observing_a_run_costs_the_same_queries_for_ten_errors_or_three_thousand(clock, queued, make_mapping,
                                                                                 make_rule, finish_run):
    make_rule(Condition.EVERY_ERROR)
    make_rule(Condition.FAILURES_PER_HOUR, threshold=1)
    make_rule(Condition.TARGET_FAILING)
    make_rule(Condition.AUTH_ERROR)
    counts = []
    for errors in (10, 3000):
        Alert.objects.all().delete()  # each run opens its incidents afresh
        run, _changed = finish_run(make_mapping(), errors=errors, observe=False)
        with CaptureQueriesContext(db_connection) as queries, queued():
            alerts = notify_run_finished(run)
        assert len(alerts) == 2  # every error, failures per hour
        counts.append(len(queries.captured_queries))
    assert counts[0] == counts[1] < 40


def test_every_error_fires_once_is_quiet_in_its_cooldown_reminds_after_it_and_recovers(
        clock, make_mapping, make_rule, finish_run):
    mapping = make_mapping()
    make_rule(Condition.EVERY_ERROR, cooldown_minutes=60)

    finish_run(mapping, errors=3)
    assert subjects() == [f"[Resync] [WARNING] 3 errors syncing {mapping.name}"]

    clock.shift(minutes=30)
    finish_run(mapping, errors=4)  # still failing, inside the cooldown
    assert len(mail.outbox) == 1
    alert = Alert.objects.get()
    assert (alert.occurrences, alert.details["counts"]["errors"]) == (2, 4)

    clock.shift(minutes=31)  # 61 minutes after the first message
    finish_run(mapping, errors=2)
    assert subjects()[1] == f"[Resync] [WARNING] Still firing: 2 errors syncing {mapping.name}"
    assert "Seen 3 times since 2026-03-02 09:00 UTC" in mail.outbox[1].body

    clock.shift(minutes=5)
    finish_run(mapping, errors=0)
    assert subjects()[2] == f"[Resync] [WARNING] Resolved: 3 errors syncing {mapping.name}"
    assert "Cleared after 66 minutes" in mail.outbox[2].body
    alert.refresh_from_db()
    assert (alert.state, alert.resolved_at, alert.notifications) == (AlertState.RESOLVED, clock.now(), 3)

    finish_run(mapping, errors=0)  # nothing to clear any more
    assert len(mail.outbox) == 3
    finish_run(mapping, errors=1)  # a new incident
    assert len(mail.outbox) == 4 and Alert.objects.filter(state=AlertState.FIRING).count() == 1


def test_a_mapping_scoped_rule_hears_only_its_mapping(clock, make_mapping, make_rule, finish_run):
    watched, other = make_mapping(), make_mapping()
    make_rule(Condition.EVERY_ERROR, scope=Scope.MAPPING, mapping=watched)
    finish_run(other, errors=5)
    assert mail.outbox == []
    finish_run(watched, errors=5)
    assert len(mail.outbox) == 1


def test_a_connection_scoped_rule_hears_the_mappings_that_use_the_connection(clock, make_mapping, make_rule,
                                                                            finish_run):
    first = make_mapping()
    sharing = make_mapping(target=first.target_connection)
    unrelated = make_mapping()
    make_rule(Condition.RUN_FAILED, scope=Scope.CONNECTION, connection=first.target_connection)
    finish_run(unrelated, errors=1, status=RunStatus.FAILED)
    assert mail.outbox == []
    finish_run(sharing, errors=1, status=RunStatus.FAILED)
    assert len(mail.outbox) == 1


# --- a run failed -------------------------------------------------------------------------------------------------


def test_a_failed_run_alerts_once_until_a_run_succeeds(clock, make_mapping, make_rule, finish_run):
    mapping = make_mapping()
    make_rule(Condition.RUN_FAILED, level=Level.CRITICAL, cooldown_minutes=15)

    finish_run(mapping, errors=1, status=RunStatus.PARTIALLY_FAILED)  # partial: the run did not fail
    assert mail.outbox == []
    finish_run(mapping, status=RunStatus.FAILED, system_error="The target could not be reached")
    assert subjects() == [f"[Resync] [CRITICAL] A run of {mapping.name} failed"]
    assert "The target could not be reached" in mail.outbox[0].body
    clock.shift(minutes=14)
    finish_run(mapping, status=RunStatus.FAILED, system_error="Still down")
    assert len(mail.outbox) == 1
    clock.shift(minutes=1)
    finish_run(mapping, status=RunStatus.FAILED, system_error="Still down")
    assert subjects()[1].startswith("[Resync] [CRITICAL] Still firing: A run of")
    finish_run(mapping)
    assert subjects()[2] == f"[Resync] [CRITICAL] Resolved: A run of {mapping.name} failed"


# --- failures per hour ----------------------------------------------------------------------------------------------


def test_failures_per_hour_fire_above_the_threshold_and_clear_as_the_hour_passes(clock, queued, make_mapping,
                                                                                 make_rule, finish_run):
    mapping = make_mapping()
    rule = make_rule(Condition.FAILURES_PER_HOUR)
    assert rule.threshold == 5  # the default

    finish_run(mapping, errors=5)  # 5 is not above 5
    assert mail.outbox == []
    clock.shift(minutes=10)
    finish_run(mapping, errors=1)
    assert subjects() == ["[Resync] [WARNING] 6 failures in the last hour in Acme"]

    clock.shift(minutes=40)
    sweep(queued)  # still 6 in the hour, inside the cooldown
    assert len(mail.outbox) == 1
    clock.shift(minutes=11)  # 61 minutes after the first five: only one failure left in the window
    sweep(queued)
    assert subjects()[1] == "[Resync] [WARNING] Resolved: 6 failures in the last hour in Acme"
    assert Alert.objects.get().state == AlertState.RESOLVED


# --- a target failing for N minutes ------------------------------------------------------------------------------


def test_a_target_failing_fires_after_n_minutes_and_recovers_when_it_accepts_writes(clock, queued, make_mapping,
                                                                                    make_rule, finish_run):
    mapping = make_mapping()
    target = mapping.target_connection
    make_rule(Condition.TARGET_FAILING, cooldown_minutes=30)  # minutes: the default 10

    finish_run(mapping, status=RunStatus.FAILED, system_error="503")
    clock.shift(minutes=5)
    finish_run(mapping, errors=3, written=0)  # partially failed, but the target took nothing: still failing
    clock.shift(minutes=4, seconds=59)
    sweep(queued)
    assert mail.outbox == []

    clock.shift(seconds=1)  # ten minutes since the first failing run
    sweep(queued)
    assert subjects() == [f"[Resync] [WARNING] {target.name} has been failing for 10 minutes"]
    assert "since 2026-03-02 09:00 UTC" in mail.outbox[0].body

    clock.shift(minutes=29)
    sweep(queued)
    assert len(mail.outbox) == 1
    clock.shift(minutes=1)
    sweep(queued)
    assert subjects()[1] == f"[Resync] [WARNING] Still firing: {target.name} has been failing for 40 minutes"

    clock.shift(minutes=1)
    finish_run(mapping, errors=1, written=5)  # the target accepts writes again
    assert subjects()[2] == f"[Resync] [WARNING] Resolved: {target.name} has been failing for 10 minutes"
    sweep(queued)
    assert len(mail.outbox) == 3


# --- unsynced records ------------------------------------------------------------------------------------------------


def test_unsynced_records_fire_above_n_and_recover_when_they_sync(clock, queued, org, make_mapping, make_rule,
                                                                  finish_run):
    mapping = make_mapping()
    make_rule(Condition.UNSYNCED_RECORDS, scope=Scope.MAPPING, mapping=mapping, threshold=100)
    RecordLink.objects.bulk_create([
        RecordLink(organization=org, mapping=mapping, source_record_id=f"ct_{n}",
                   status=LinkStatus.FAILED if n < 60 else LinkStatus.PENDING)
        for n in range(100)
    ])
    finish_run(mapping)
    assert mail.outbox == []
    RecordLink.objects.create(organization=org, mapping=mapping, source_record_id="ct_x", status=LinkStatus.FAILED)
    sweep(queued)
    assert subjects() == [f"[Resync] [WARNING] 101 records not synced in mapping {mapping.name}"]
    RecordLink.objects.filter(status=LinkStatus.FAILED).update(status=LinkStatus.SYNCED)
    clock.shift(minutes=1)
    sweep(queued)
    assert subjects()[1].startswith("[Resync] [WARNING] Resolved: 101 records not synced")


# --- authentication -------------------------------------------------------------------------------------------------


def test_an_auth_error_is_critical_and_immediate_and_recovers_on_reconnect(clock, queued, make_mapping, make_rule):
    mapping = make_mapping()
    target = mapping.target_connection
    rule = make_rule(Condition.AUTH_ERROR, level=Level.WARNING)
    assert rule.level == Level.CRITICAL  # whatever was asked

    refused = ConnectorError(ErrorCategory.AUTH, "The API key has expired", code="expired")
    with queued():
        connection_needs_reauth(connection=target, error=refused)
    assert subjects() == [f"[Resync] [CRITICAL] {target.name} needs to be reconnected"]
    assert "The API key has expired" in mail.outbox[0].body

    clock.shift(minutes=5)
    with queued():
        connection_needs_reauth(connection=target, error=refused)  # refused again: same incident
    sweep(queued)
    assert len(mail.outbox) == 1

    target.status = ConnectionStatus.ACTIVE
    target.save()
    clock.shift(minutes=1)
    sweep(queued)
    assert subjects()[1] == f"[Resync] [CRITICAL] Resolved: {target.name} needs to be reconnected"


def test_an_auth_failure_in_a_real_sync_alerts_through_the_engine(clock, queued, make_mapping, make_connection,
                                                                  make_rule):
    target = make_connection("Expired CRM", faults={"expired_credentials": True})
    mapping = make_mapping(target=target)
    make_rule(Condition.AUTH_ERROR)
    make_rule(Condition.EVERY_ERROR)
    seed_records(mapping.source_connection, "contacts", [person(1), person(2)])
    with queued():
        run_mapping(mapping)
    assert f"[Resync] [CRITICAL] {target.name} needs to be reconnected" in subjects()
    assert len(mail.outbox) == len(set(subjects()))  # one message per incident


# --- auto-pause -----------------------------------------------------------------------------------------------------


def test_a_mapping_that_pauses_itself_alerts_and_recovers_when_resumed(clock, queued, failing_target, make_mapping,
                                                                       make_rule):
    mapping = make_mapping(target=failing_target, error_strategy="fail_fast", pause_after_failed_runs=2)
    make_rule(Condition.AUTO_PAUSED)
    seed_records(mapping.source_connection, "contacts", [person(1)])
    with queued():
        first = run_mapping(mapping)
    assert first.status == RunStatus.FAILED and mail.outbox == []
    clock.shift(minutes=1)
    with queued():
        run_mapping(mapping)
    mapping.refresh_from_db()
    assert not mapping.is_active
    assert subjects() == [f"[Resync] [WARNING] {mapping.name} paused itself"]
    assert "Paused after 2 failed runs in a row" in mail.outbox[0].body

    sweep(queued)
    assert len(mail.outbox) == 1
    mapping_resume(mapping=mapping)
    sweep(queued)
    assert subjects()[1] == f"[Resync] [WARNING] Resolved: {mapping.name} paused itself"


def test_a_paused_mapping_deleted_closes_its_alert_without_a_recovery_notice(clock, queued, failing_target,
                                                                            make_mapping, make_rule):
    mapping = make_mapping(target=failing_target, error_strategy="fail_fast", pause_after_failed_runs=1)
    rule = make_rule(Condition.AUTO_PAUSED)
    seed_records(mapping.source_connection, "contacts", [person(1)])
    with queued():
        run_mapping(mapping)
    alert = Alert.objects.get(rule=rule)
    assert alert.state == AlertState.FIRING

    mapping_delete(mapping=mapping)
    sweep(queued)

    alert.refresh_from_db()
    assert alert.state == AlertState.RESOLVED and "the mapping was deleted" in alert.details["closed_reason"]
    assert len(mail.outbox) == 1  # the alert itself, and no "Resolved" that would claim the mapping recovered


# --- the daily digest -------------------------------------------------------------------------------------------


def test_the_daily_digest_is_sent_once_a_day_at_its_hour(clock, queued, make_mapping, make_rule, finish_run):
    mapping = make_mapping()
    make_rule(Condition.DAILY_DIGEST, digest_hour=8)  # created at 09:00, after today's hour
    finish_run(mapping, errors=7)
    sweep(queued)
    assert mail.outbox == []

    clock.shift(hours=22, minutes=59)  # the next day, 07:59
    sweep(queued)
    assert mail.outbox == []
    clock.shift(minutes=1)  # 08:00
    sweep(queued)
    assert subjects() == ["[Resync] [WARNING] Daily digest for Acme: 1 run, 7 errors"]
    assert "errors: 7" in mail.outbox[0].body and "category validation: 7" in mail.outbox[0].body
    clock.shift(minutes=1)
    sweep(queued)
    clock.shift(hours=12)
    sweep(queued)
    assert len(mail.outbox) == 1
    clock.shift(hours=11, minutes=59)  # the day after, 08:00
    sweep(queued)
    assert subjects()[1] == "[Resync] [WARNING] Daily digest for Acme: 0 runs, 0 errors"


# --- customer-facing --------------------------------------------------------------------------------------------


def test_a_customer_facing_rule_writes_to_the_customer_in_their_words(clock, org, make_mapping, make_rule,
                                                                     finish_run):
    mapping = make_mapping()
    make_rule(Condition.EVERY_ERROR, customer_facing=True, customer_name="Maria",
              customer_contacts=["owner@pizzeria.example"])
    finish_run(mapping, errors=12)
    team = next(m for m in mail.outbox if m.to == ["ops@acme.example"])
    customer = next(m for m in mail.outbox if m.to == ["owner@pizzeria.example"])
    assert team.subject.startswith("[Resync] [WARNING] 12 errors")
    assert customer.subject == f"We are working on a sync problem: {mapping.name}"
    assert customer.body.startswith("Hello Maria,")
    assert "some records could not be synced" in customer.body and "— Acme" in customer.body
    assert "/runs/" not in customer.body and "[Resync]" not in customer.subject  # no internal link or jargon
    finish_run(mapping, errors=0)
    back = [m for m in mail.outbox if m.to == ["owner@pizzeria.example"]]
    assert back[-1].subject == f"Back to normal: {mapping.name}"
    assert Delivery.objects.filter(audience="customer", status=DeliveryStatus.DELIVERED).count() == 2


def test_a_notification_failure_never_stops_a_sync(clock, queued, make_mapping, make_rule, monkeypatch):
    mapping = make_mapping()
    make_rule(Condition.EVERY_ERROR)
    seed_records(mapping.source_connection, "contacts", [person(1), person(2, email="bad")])

    def broken(*args, **kwargs):
        raise RuntimeError("notifications are broken")

    monkeypatch.setattr("notifications.alerts.deliveries_queue", broken)
    with queued():
        run = run_mapping(mapping)
    assert run.status == RunStatus.PARTIALLY_FAILED
    assert run.finished_at is not None
    assert not Alert.objects.exists()  # the savepoint rolled the half-made alert back


def test_the_sweep_keeps_going_past_a_broken_rule(clock, queued, make_rule, monkeypatch, make_mapping, finish_run):
    make_rule(Condition.DAILY_DIGEST, name="first", digest_hour=9)
    make_rule(Condition.FAILURES_PER_HOUR, name="second", threshold=1)
    finish_run(make_mapping(), errors=2)
    assert len(mail.outbox) == 1
    original = notifications_sweep.__globals__["_digest_if_due"]
    monkeypatch.setitem(notifications_sweep.__globals__, "_digest_if_due",
                        lambda rule, now: (_ for _ in ()).throw(RuntimeError("boom")))
    clock.shift(hours=61)
    sweep(queued)  # the digest crashes; the failures rule still clears
    assert subjects()[-1].startswith("[Resync] [WARNING] Resolved: 2 failures")
    assert original is not None
