"""Evaluating rules into incidents: an alert opens once when its condition starts, is updated while it lasts
(a reminder only once the rule's cooldown has passed) and resolves, with a recovery notice, when it clears.

Three moments observe conditions:
- a run finishing (`notify_run_finished`, from syncs.recovery): every error of the run in one message, a failed
  run, failures per hour, unsynced records, a target failing, authentication; a bounded number of queries
  however many errors the run had (its errors are counted in one aggregate);
- the events themselves: a connection needing reauthentication (`notify_connection_needs_reauth`) and a mapping
  pausing itself (`notify_mapping_auto_paused`) alert at once;
- the periodic sweep (`notifications_sweep`, every minute): the daily digest, a target failing for N minutes,
  and every condition that clears with time or by an operator's hand (failures per hour, unsynced records,
  reconnections, resumed mappings).

Observing only writes rows (alerts, deliveries); sending is a worker's job (notifications.deliveries), so a
slow or failing channel never holds up a sync.
"""

import dataclasses
import logging
from collections import defaultdict
from datetime import datetime, time, timedelta
from functools import reduce
from operator import or_

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Count, Max, Min, Q
from django.urls import NoReverseMatch, reverse
from django.utils import timezone

from integrations.models import Connection, ConnectionStatus
from mappings.models import Mapping
from notifications.deliveries import deliveries_queue
from notifications.models import Alert, AlertState, Condition, DeliveryEvent, Level, Rule, Scope
from syncs.events import log_event
from syncs.models import ErrorLevel, LinkStatus, RecordError, RecordLink, RunStatus, SyncRun

FAILURE_LEVELS = (ErrorLevel.SYSTEM, ErrorLevel.BATCH, ErrorLevel.RECORD)
UNSYNCED_STATUSES = (LinkStatus.FAILED, LinkStatus.PENDING)
RUN_CONDITIONS = (Condition.EVERY_ERROR, Condition.RUN_FAILED, Condition.FAILURES_PER_HOUR,
                  Condition.UNSYNCED_RECORDS, Condition.TARGET_FAILING, Condition.AUTH_ERROR)
SWEPT_CONDITIONS = (Condition.DAILY_DIGEST, Condition.TARGET_FAILING, Condition.FAILURES_PER_HOUR,
                    Condition.UNSYNCED_RECORDS, Condition.AUTH_ERROR, Condition.AUTO_PAUSED)
# A run the target took nothing from: it failed, or every record it tried failed.
TARGET_FAILING_RUN = Q(status=RunStatus.FAILED) | Q(status=RunStatus.PARTIALLY_FAILED, created=0, updated=0)
TARGET_OK_RUN = Q(status=RunStatus.SUCCEEDED) | Q(status=RunStatus.PARTIALLY_FAILED, created__gt=0) | Q(
    status=RunStatus.PARTIALLY_FAILED, updated__gt=0)


@dataclasses.dataclass
class Observation:
    """What a condition looks like for one subject right now."""

    key: str
    active: bool
    title: str = ""
    summary: str = ""
    counts: dict = dataclasses.field(default_factory=dict)
    link: str = ""
    link_label: str = ""
    subject: str = ""
    customer_reason: str = ""
    connection: Connection | None = None
    mapping: Mapping | None = None
    run: SyncRun | None = None


def _link(name, *args, query=""):
    base = getattr(settings, "RESYNC_PUBLIC_URL", "").rstrip("/")
    try:
        return f"{base}{reverse(name, args=args)}{query}"
    except NoReverseMatch:
        return ""


def _plural(count, word):
    return f"{count} {word}{'' if count == 1 else 's'}"


# --- scopes --------------------------------------------------------------------------------------------------------


def _scope_key(rule):
    if rule.scope == Scope.MAPPING:
        return f"mapping:{rule.mapping_id}"
    if rule.scope == Scope.CONNECTION:
        return f"connection:{rule.connection_id}"
    return "org"


def _scope_name(rule):
    if rule.scope == Scope.MAPPING:
        return f"mapping {rule.mapping.name}"
    if rule.scope == Scope.CONNECTION:
        return f"connection {rule.connection.name}"
    return rule.organization.name


def _scoped(queryset, rule, *, mapping_field="mapping"):
    """A queryset of rows that belong to a mapping, narrowed to the rule's scope."""
    queryset = queryset.filter(organization_id=rule.organization_id)
    if rule.scope == Scope.MAPPING:
        return queryset.filter(**{f"{mapping_field}_id": rule.mapping_id})
    if rule.scope == Scope.CONNECTION:
        return queryset.filter(Q(**{f"{mapping_field}__source_connection_id": rule.connection_id})
                               | Q(**{f"{mapping_field}__target_connection_id": rule.connection_id}))
    return queryset


def _rule_covers_mapping(rule, mapping):
    return (rule.scope == Scope.ORGANIZATION or (rule.scope == Scope.MAPPING and rule.mapping_id == mapping.pk)
            or (rule.scope == Scope.CONNECTION and rule.connection_id in (mapping.source_connection_id,
                                                                          mapping.target_connection_id)))


def _rule_covers_connection(rule, connection, *, mappings_of_connection=None):
    if rule.scope == Scope.ORGANIZATION:
        return True
    if rule.scope == Scope.CONNECTION:
        return rule.connection_id == connection.pk
    return rule.mapping_id in (mappings_of_connection or {}).get(connection.pk, ())


# --- observing -----------------------------------------------------------------------------------------------------


def _observe_run_errors(run, counts):
    """Every error of a run as one observation: the counts come from one aggregate, whatever their number."""
    mapping = run.mapping
    by_level = defaultdict(int)
    by_category = defaultdict(int)
    for row in counts:
        by_level[row["level"]] += row["n"]
        by_category[row["category"]] += row["n"]
    failures = sum(by_level.values())
    parts = [f"{_plural(by_level[level], level + ' error')}" for level in FAILURE_LEVELS if by_level[level]]
    summary = (f"Run of {mapping.name} ({run.get_status_display().lower()}) left {', '.join(parts)}: "
               f"{run.failed} of {run.read} records failed.")
    if run.system_error:
        summary += f" It stopped: {run.system_error[:300]}"
    top = sorted(by_category.items(), key=lambda item: (-item[1], item[0]))
    return Observation(
        key=f"mapping:{mapping.pk}", active=failures > 0, subject=mapping.name,
        title=f"{_plural(failures, 'error')} syncing {mapping.name}", summary=summary,
        counts={"errors": failures, "records_read": run.read, "records_failed": run.failed,
                **{f"category_{category}": n for category, n in top[:5]}},
        link=_link("run_detail", run.code), link_label="Open the run",
        customer_reason="some records could not be synced", mapping=mapping, run=run,
    )


def _observe_run_failed(run):
    mapping = run.mapping
    return Observation(
        key=f"mapping:{mapping.pk}", active=run.status == RunStatus.FAILED, subject=mapping.name,
        title=f"A run of {mapping.name} failed",
        summary=f"The run failed: {run.system_error[:300] or 'see its errors'}.",
        counts={"records_read": run.read, "records_failed": run.failed},
        link=_link("run_detail", run.code), link_label="Open the run",
        customer_reason="the last sync did not complete", mapping=mapping, run=run,
    )


def _observe_failures_per_hour(rule, now):
    count = _scoped(RecordError.objects.all(), rule).filter(
        level__in=FAILURE_LEVELS, created_at__gte=now - timedelta(hours=1), created_at__lte=now).count()
    scope = _scope_name(rule)
    return Observation(
        key=_scope_key(rule), active=count > rule.threshold, subject=scope,
        title=f"{_plural(count, 'failure')} in the last hour in {scope}",
        summary=f"{_plural(count, 'record failure')} in the last hour, above the limit of {rule.threshold}.",
        counts={"failures_last_hour": count, "threshold": rule.threshold},
        link=_link("errors"), link_label="Open the errors",
        customer_reason="many records are failing to sync", connection=rule.connection, mapping=rule.mapping,
    )


def _observe_unsynced(rule):
    count = _scoped(RecordLink.objects.all(), rule).filter(status__in=UNSYNCED_STATUSES).count()
    scope = _scope_name(rule)
    return Observation(
        key=_scope_key(rule), active=count > rule.threshold, subject=scope,
        title=f"{_plural(count, 'record')} not synced in {scope}",
        summary=f"{_plural(count, 'record')} failed or wait to be synced, above the limit of {rule.threshold}.",
        counts={"unsynced_records": count, "threshold": rule.threshold},
        link=_link("errors"), link_label="Open the errors",
        customer_reason=f"{_plural(count, 'record')} are waiting to be synced", connection=rule.connection,
        mapping=rule.mapping,
    )


def _targets_failing_since(organization_id, connection_ids):
    """{target connection pk: when its current streak of failing runs began}, for targets failing now."""
    if not connection_ids:
        return {}
    runs = SyncRun.objects.filter(organization_id=organization_id, is_test=False, finished_at__isnull=False,
                                  mapping__target_connection_id__in=connection_ids)
    last_ok = dict(runs.filter(TARGET_OK_RUN).values_list("mapping__target_connection_id")
                   .annotate(at=Max("finished_at")).order_by())
    after_ok = reduce(or_, [Q(mapping__target_connection_id=pk, finished_at__gt=last_ok[pk]) if pk in last_ok
                            else Q(mapping__target_connection_id=pk) for pk in connection_ids])
    return dict(runs.filter(TARGET_FAILING_RUN).filter(after_ok).values_list("mapping__target_connection_id")
                .annotate(since=Min("finished_at")).order_by())


def _observe_target_failing(rule, connections, since_by_connection, now):
    minutes = rule.minutes
    found = []
    for connection in connections:
        since = since_by_connection.get(connection.pk)
        lasted = (now - since) if since else timedelta(0)
        active = since is not None and lasted >= timedelta(minutes=minutes)
        found.append(Observation(
            key=f"connection:{connection.pk}", active=active, subject=connection.name,
            title=f"{connection.name} has been failing for {int(lasted.total_seconds() // 60)} minutes",
            summary=(f"Every run writing to {connection.name} since {since:%Y-%m-%d %H:%M} UTC failed; "
                     f"the limit is {minutes} minutes." if since else f"{connection.name} accepts writes again."),
            counts={"failing_minutes": int(lasted.total_seconds() // 60), "limit_minutes": minutes},
            link=_link("connections:detail", connection.code), link_label="Open the connection",
            customer_reason=f"{connection.name} has not accepted updates for {minutes} minutes",
            connection=connection,
        ))
    return found


def _observe_auth(connection):
    return Observation(
        key=f"connection:{connection.pk}", active=connection.status == ConnectionStatus.NEEDS_REAUTH,
        subject=connection.name, title=f"{connection.name} needs to be reconnected",
        summary=(f"{connection.name} refused Resync's credentials: {connection.status_reason or 'authentication'}"
                 ". Its syncs are stopped until someone reconnects it."),
        link=_link("connections:detail", connection.code), link_label="Reconnect",
        customer_reason=f"the access to {connection.name} has expired or was revoked", connection=connection,
    )


def _observe_paused_mapping(mapping, *, active):
    return Observation(
        key=f"mapping:{mapping.pk}", active=active, subject=mapping.name,
        title=f"{mapping.name} paused itself",
        summary=mapping.paused_reason or f"{mapping.name} was paused.",
        link=_link("mappings:detail", mapping.code), link_label="Open the mapping",
        customer_reason="syncing was paused after repeated failures", mapping=mapping,
    )


# --- incidents -----------------------------------------------------------------------------------------------------


def _message(rule, alert, event, observation, now):
    started = alert.started_at
    if event == DeliveryEvent.RESOLVED:
        lasted = int((now - started).total_seconds() // 60)
        title = f"Resolved: {alert.title}"
        summary = f"Cleared after {_plural(lasted, 'minute')}. {observation.summary}".strip()
    elif event == DeliveryEvent.UPDATED:
        title = f"Still firing: {observation.title}"
        summary = (f"{observation.summary} Seen {_plural(alert.occurrences, 'time')} since "
                   f"{started:%Y-%m-%d %H:%M} UTC.")
    else:
        title, summary = observation.title, observation.summary
    return {
        "type": f"alert.{event}", "event": event, "audience": "team", "level": alert.level,
        "title": title[:300], "summary": summary, "counts": observation.counts or alert.details.get("counts", {}),
        "link": observation.link or alert.details.get("link", ""),
        "link_label": observation.link_label or alert.details.get("link_label", ""),
        "rule": {"id": str(rule.code), "name": rule.name, "condition": rule.condition},
        "alert": {"id": str(alert.code), "state": alert.state, "subject": alert.details.get("subject", ""),
                  "started_at": started.isoformat(), "occurrences": alert.occurrences,
                  "resolved_at": alert.resolved_at.isoformat() if alert.resolved_at else None},
    }


def _customer_message(rule, alert, event, observation):
    org = rule.organization.name
    hello = f"Hello {rule.customer_name}," if rule.customer_name else "Hello,"
    reason = observation.customer_reason or alert.details.get("customer_reason", "there is a sync problem")
    subject = observation.subject or alert.details.get("subject", "your systems")
    if event == DeliveryEvent.RESOLVED:
        title = f"Back to normal: {subject}"
        body = (f"{hello}\n\nThe sync problem with {subject} we told you about is solved: everything is in sync "
                f"again. Nothing is needed from you.")
    else:
        title = f"We are working on a sync problem: {subject}"
        body = (f"{hello}\n\nWe noticed a problem keeping {subject} in sync: {reason}. Your data is safe, and "
                f"the {org} team has been told and is working on it. We will write again when it is solved.")
    return {"type": f"alert.{event}", "event": event, "audience": "customer", "level": alert.level,
            "title": title[:300], "summary": body, "footer": f"— {org}"}


def _notify(rule, alert, event, observation, now):
    alert.last_notified_at = now
    alert.notifications += 1
    customer = _customer_message(rule, alert, event, observation) if rule.customer_facing else None
    deliveries_queue(
        organization=rule.organization, channels=list(rule.channels.all()), alert=alert, rule=rule, event=event,
        message=_message(rule, alert, event, observation, now), now=now,
        customer_message=customer, customer_contacts=rule.customer_contacts,
    )


def _details(observation):
    return {"counts": observation.counts, "link": observation.link, "link_label": observation.link_label,
            "subject": observation.subject, "customer_reason": observation.customer_reason}


def _apply(rule, observation, open_alert, now):
    """Open, update or resolve the rule's incident for one subject; returns the alert (or None)."""
    if observation.active and open_alert is None:
        alert = Alert(
            organization_id=rule.organization_id, rule=rule, key=observation.key, level=rule.level,
            title=observation.title[:300], summary=observation.summary, details=_details(observation),
            connection=observation.connection, mapping=observation.mapping, run=observation.run,
            started_at=now, updated_at=now,
        )
        try:
            with transaction.atomic():
                alert.save()
        except IntegrityError:
            # Another worker opened it a moment ago: this observation is an update of that incident.
            open_alert = Alert.objects.get(rule=rule, key=observation.key, state=AlertState.FIRING)
            return _apply(rule, observation, open_alert, now)
        _notify(rule, alert, DeliveryEvent.FIRED, observation, now)
        alert.save(update_fields=["last_notified_at", "notifications"])
        log_event("notification_alert_fired", alert=str(alert.code), rule=str(rule.code), key=alert.key,
                  alert_level=alert.level, condition=rule.condition)
        return alert
    if observation.active:
        alert = open_alert
        alert.occurrences += 1
        alert.updated_at = now
        alert.summary, alert.details = observation.summary, _details(observation)
        alert.run = observation.run or alert.run
        fields = ["occurrences", "updated_at", "summary", "details", "run"]
        cooldown = timedelta(minutes=rule.cooldown_minutes)
        if alert.last_notified_at is None or now - alert.last_notified_at >= cooldown:
            _notify(rule, alert, DeliveryEvent.UPDATED, observation, now)
            fields += ["last_notified_at", "notifications"]
        alert.save(update_fields=fields)
        return alert
    if open_alert is not None:
        alert = open_alert
        alert.state, alert.resolved_at, alert.updated_at = AlertState.RESOLVED, now, now
        _notify(rule, alert, DeliveryEvent.RESOLVED, observation, now)
        alert.save(update_fields=["state", "resolved_at", "updated_at", "last_notified_at", "notifications"])
        log_event("notification_alert_resolved", alert=str(alert.code), rule=str(rule.code), key=alert.key)
        return alert
    return None


def _open_alerts(rules):
    alerts = Alert.objects.filter(rule__in=[rule.pk for rule in rules], state=AlertState.FIRING)
    return {(alert.rule_id, alert.key): alert for alert in alerts}


def _apply_all(pairs, now):
    """pairs: [(rule, observation)] → the alerts opened, updated or resolved, with one query for open alerts."""
    rules = list({rule.pk: rule for rule, _observation in pairs}.values())
    if not rules:
        return []
    open_alerts = _open_alerts(rules)
    changed = []
    for rule, observation in pairs:
        alert = _apply(rule, observation, open_alerts.get((rule.pk, observation.key)), now)
        if alert is not None:
            changed.append(alert)
            open_alerts[(rule.pk, observation.key)] = alert if alert.state == AlertState.FIRING else None
    return changed


def _enabled_rules(organization_id, conditions):
    return (Rule.objects.filter(organization_id=organization_id, is_enabled=True, condition__in=conditions)
            .select_related("organization", "connection", "mapping").prefetch_related("channels"))


# --- the moments -----------------------------------------------------------------------------------------------


def notify_run_finished(run, *, now=None):
    """Observe the run-related conditions of every rule covering the run's mapping; returns the alerts changed.

    The number of queries depends on the rules, never on the run's errors: they are counted in one aggregate.
    """
    if run.is_test:
        return []
    now = now or timezone.now()
    mapping = run.mapping
    rules = [rule for rule in _enabled_rules(run.organization_id, RUN_CONDITIONS)
             if _rule_covers_mapping(rule, mapping)]
    if not rules:
        return []
    pairs = []
    conditions = {rule.condition for rule in rules}
    if Condition.EVERY_ERROR in conditions:
        counts = list(RecordError.objects.filter(run=run, level__in=FAILURE_LEVELS)
                      .values("level", "category").annotate(n=Count("pk")).order_by())
        errors = _observe_run_errors(run, counts)
        pairs += [(rule, errors) for rule in rules if rule.condition == Condition.EVERY_ERROR]
    pairs += [(rule, _observe_run_failed(run)) for rule in rules if rule.condition == Condition.RUN_FAILED]
    for rule in rules:
        if rule.condition == Condition.FAILURES_PER_HOUR:
            pairs.append((rule, _observe_failures_per_hour(rule, now)))
        elif rule.condition == Condition.UNSYNCED_RECORDS:
            pairs.append((rule, _observe_unsynced(rule)))
    connections = {c.pk: c for c in Connection.objects.filter(
        pk__in=[mapping.source_connection_id, mapping.target_connection_id])}
    target = connections.get(mapping.target_connection_id)
    target_rules = [rule for rule in rules if rule.condition == Condition.TARGET_FAILING
                    and (rule.scope != Scope.CONNECTION or rule.connection_id == mapping.target_connection_id)]
    if target_rules and target is not None:
        since = _targets_failing_since(run.organization_id, [target.pk])
        for rule in target_rules:
            pairs += [(rule, observation) for observation in _observe_target_failing(rule, [target], since, now)]
    for rule in rules:
        if rule.condition == Condition.AUTH_ERROR:
            pairs += [(rule, _observe_auth(connection)) for connection in connections.values()
                      if rule.scope != Scope.CONNECTION or rule.connection_id == connection.pk]
    return _apply_all(pairs, now)


def notify_connection_needs_reauth(connection, *, now=None):
    """A connection's credentials were refused: authentication rules (and auto-pause rules, since its syncs
    stop) covering it alert at once."""
    now = now or timezone.now()
    rules = list(_enabled_rules(connection.organization_id, (Condition.AUTH_ERROR, Condition.AUTO_PAUSED)))
    if not rules:
        return []
    mapping_ids = _mappings_by_connection(connection.organization_id, [connection.pk])
    observation = _observe_auth(connection)
    return _apply_all([(rule, observation) for rule in rules
                       if _rule_covers_connection(rule, connection, mappings_of_connection=mapping_ids)], now)


def notify_mapping_auto_paused(mapping, *, now=None):
    """A mapping paused itself after failed runs in a row: auto-pause rules covering it alert at once."""
    now = now or timezone.now()
    rules = [rule for rule in _enabled_rules(mapping.organization_id, (Condition.AUTO_PAUSED,))
             if _rule_covers_mapping(rule, mapping)]
    observation = _observe_paused_mapping(mapping, active=True)
    return _apply_all([(rule, observation) for rule in rules], now)


def _mappings_by_connection(organization_id, connection_ids):
    found = defaultdict(set)
    for pk, source, target in Mapping.objects.filter(organization_id=organization_id).filter(
            Q(source_connection_id__in=connection_ids) | Q(target_connection_id__in=connection_ids)).values_list(
            "pk", "source_connection_id", "target_connection_id"):
        found[source].add(pk)
        found[target].add(pk)
    return found


def _connections_in_scope(rule, *, targets_only=False):
    connections = Connection.objects.filter(organization_id=rule.organization_id)
    if rule.scope == Scope.CONNECTION:
        return connections.filter(pk=rule.connection_id)
    if rule.scope == Scope.MAPPING:
        ids = [rule.mapping.target_connection_id] if targets_only else [
            rule.mapping.source_connection_id, rule.mapping.target_connection_id]
        return connections.filter(pk__in=ids)
    if targets_only:
        return connections.filter(pk__in=Mapping.objects.filter(organization_id=rule.organization_id)
                                  .values("target_connection_id"))
    return connections


def alerts_close(rule, *, reason, now, keys=None):
    """Resolve the rule's firing alerts (those of `keys` only, if given) without a recovery notice: the condition
    may well still hold, or its subject is gone, so telling the channels it cleared would be false; each alert says
    why it was closed. Returns how many."""
    alerts = Alert.objects.select_for_update().filter(rule=rule, state=AlertState.FIRING)
    alerts = list(alerts if keys is None else alerts.filter(key__in=keys))
    for alert in alerts:
        alert.state, alert.resolved_at, alert.updated_at = AlertState.RESOLVED, now, now
        alert.details = {**alert.details, "closed_reason": f"Closed without a recovery notice: {reason}."}
    Alert.objects.bulk_update(alerts, ["state", "resolved_at", "updated_at", "details"])
    for alert in alerts:
        log_event("notification_alert_closed", alert=str(alert.code), rule=str(rule.code), reason=reason)
    return len(alerts)


def _sweep_rule(rule, now):
    if rule.condition == Condition.DAILY_DIGEST:
        _digest_if_due(rule, now)
        return []
    if rule.condition == Condition.FAILURES_PER_HOUR:
        return [(rule, _observe_failures_per_hour(rule, now))]
    if rule.condition == Condition.UNSYNCED_RECORDS:
        return [(rule, _observe_unsynced(rule))]
    if rule.condition == Condition.TARGET_FAILING:
        targets = list(_connections_in_scope(rule, targets_only=True))
        since = _targets_failing_since(rule.organization_id, [c.pk for c in targets])
        return [(rule, o) for o in _observe_target_failing(rule, targets, since, now)]
    if rule.condition == Condition.AUTH_ERROR:
        return [(rule, _observe_auth(c)) for c in _connections_in_scope(rule)]
    if rule.condition == Condition.AUTO_PAUSED:
        return _sweep_auto_paused(rule, now)
    return []


def _sweep_auto_paused(rule, now):
    """Auto-pause alerts open at the event; the sweep sees them clear (a resumed mapping, a reconnection) and
    notices connections that stopped without the event reaching here."""
    pairs = []
    open_keys = set(Alert.objects.filter(rule=rule, state=AlertState.FIRING).values_list("key", flat=True))
    mapping_ids = {int(key.split(":")[1]) for key in open_keys if key.startswith("mapping:")}
    mappings = list(Mapping.objects.filter(pk__in=mapping_ids))
    for mapping in mappings:
        pairs.append((rule, _observe_paused_mapping(mapping, active=not mapping.is_active)))
    # A paused mapping deleted since: nothing left to resume, so nothing will clear its alert but this.
    gone = mapping_ids - {mapping.pk for mapping in mappings}
    if gone:
        alerts_close(rule, reason="the mapping was deleted", now=now, keys=[f"mapping:{pk}" for pk in gone])
    for connection in _connections_in_scope(rule):
        if connection.status == ConnectionStatus.NEEDS_REAUTH or f"connection:{connection.pk}" in open_keys:
            pairs.append((rule, _observe_auth(connection)))
    return pairs


def notifications_sweep(*, now=None):
    """Every minute: time-based rules of every organization, then deliveries whose retry is due."""
    from notifications.deliveries import deliveries_requeue_due

    now = now or timezone.now()
    rules = (Rule.objects.filter(is_enabled=True, condition__in=SWEPT_CONDITIONS)
             .select_related("organization", "connection", "mapping").prefetch_related("channels").order_by("pk"))
    changed = []
    for rule in rules:
        try:
            with transaction.atomic():
                changed += _apply_all(_sweep_rule(rule, now), now)
        except Exception:
            # One rule's failure (a deleted subject, a bug) must not keep every other rule from being evaluated.
            logging.getLogger("resync.notifications").exception("notification rule sweep failed")
            log_event("notification_rule_sweep_failed", level=logging.ERROR, rule=str(rule.code))
    requeued = deliveries_requeue_due(now=now)
    return {"alerts": len(changed), "requeued": len(requeued)}


# --- the daily digest ----------------------------------------------------------------------------------------------


def next_digest_at(rule, after):
    """The first digest time (the rule's UTC hour) strictly after `after`."""
    candidate = datetime.combine(after.date(), time(rule.digest_hour), tzinfo=after.tzinfo)
    return candidate if candidate > after else candidate + timedelta(days=1)


def _digest_if_due(rule, now):
    reference = rule.last_digest_at or rule.created_at
    if now < next_digest_at(rule, reference):
        return None
    # Claimed by a conditional update: two sweeps at once send one digest.
    claimed = Rule.objects.filter(pk=rule.pk, last_digest_at=rule.last_digest_at).update(last_digest_at=now)
    if not claimed:
        return None
    since = now - timedelta(days=1)
    runs = _scoped(SyncRun.objects.all(), rule).filter(is_test=False, finished_at__gte=since, finished_at__lt=now)
    by_status = dict(runs.values_list("status").annotate(n=Count("pk")).order_by())
    errors = _scoped(RecordError.objects.all(), rule).filter(level__in=FAILURE_LEVELS, created_at__gte=since,
                                                             created_at__lt=now)
    by_category = dict(errors.values_list("category").annotate(n=Count("pk")).order_by())
    firing = Alert.objects.filter(organization_id=rule.organization_id, state=AlertState.FIRING).count()
    total_errors = sum(by_category.values())
    scope = _scope_name(rule)
    counts = {"runs": sum(by_status.values()), **{f"runs_{status}": n for status, n in sorted(by_status.items())},
              "errors": total_errors, **{f"category_{c}": n for c, n in sorted(by_category.items())},
              "alerts_firing": firing}
    message = {
        "type": "digest", "event": DeliveryEvent.DIGEST, "audience": "team", "level": Level.WARNING,
        "title": f"Daily digest for {scope}: {_plural(counts['runs'], 'run')}, {_plural(total_errors, 'error')}",
        "summary": (f"In the 24 hours to {now:%Y-%m-%d %H:%M} UTC: {_plural(counts['runs'], 'run')} finished, "
                    f"{_plural(total_errors, 'error')} recorded, {_plural(firing, 'alert')} firing now."),
        "counts": counts, "link": _link("home"), "link_label": "Open the overview",
        "rule": {"id": str(rule.code), "name": rule.name, "condition": rule.condition},
    }
    deliveries_queue(organization=rule.organization, channels=list(rule.channels.all()), rule=rule,
                     event=DeliveryEvent.DIGEST, message=message, now=now)
    log_event("notification_digest_queued", rule=str(rule.code))
    return message
