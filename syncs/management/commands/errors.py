"""python manage.py errors {list,retry} --org SLUG [filters] [--json]

Filters (each optional, the repeatable ones match any of their values): --category C, --code X, --level L,
--status S, --mapping ID, --target-connection ID, --run ID, --since ISO, --until ISO, --search TEXT.
`retry` adds --force (overwrite target records that changed after the failure).
"""

import json
from datetime import datetime

from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone
from django.utils.dateparse import parse_date, parse_datetime

from accounts.models import Organization
from integrations.errors import ErrorCategory
from integrations.models import Connection
from mappings.models import Mapping
from syncs.models import ErrorLevel, ErrorStatus, Resolution, SyncRun
from syncs.retries import SKIP_REASONS, errors_retry
from syncs.selectors import record_errors_matching


class Command(BaseCommand):
    help = "List or retry an organization's record errors matching filters."

    def add_arguments(self, parser):
        actions = parser.add_subparsers(dest="action", required=True, metavar="{list,retry}")
        listing = actions.add_parser("list", help="One line per matching error (newest first)")
        _add_filters(listing)
        listing.add_argument("--limit", type=int, help="Show at most this many errors")
        retry = actions.add_parser("retry", help="Retry the matching errors in one replay run per mapping")
        _add_filters(retry)
        retry.add_argument(
            "--force", action="store_true", help="Overwrite target records that changed after the failure"
        )

    def handle(self, *args, action, **options):
        organization = Organization.objects.filter(slug=options["org"]).first()
        if organization is None:
            raise CommandError(f"No organization with slug '{options['org']}'")
        errors = record_errors_matching(organization=organization, **_filters(organization, options))
        if action == "list":
            self.list_errors(errors, limit=options["limit"], as_json=options["json"])
        else:
            self.retry_errors(organization, errors, force=options["force"], as_json=options["json"])

    def list_errors(self, errors, *, limit, as_json):
        if limit is not None:
            errors = errors[: max(limit, 0)]
        for error in errors.iterator():
            if as_json:
                self.stdout.write(_json_line(_error_row(error)))
            else:
                message = " ".join(error.message.split())
                self.stdout.write(
                    f"{error.pk}\t{error.level}\t{error.category}\t{error.error_code or '-'}\t{error.status}\t"
                    f"{error.source_record_id or '-'}\t{message}"
                )

    def retry_errors(self, organization, errors, *, force, as_json):
        summary = errors_retry(
            organization=organization, queryset=errors, resolution=Resolution.BULK_RETRY, force=force
        )
        if as_json:
            self.stdout.write(_json_line(summary))
            return
        if not summary["queued"] and not summary["skipped"]:
            self.stdout.write("No error matches these filters: nothing queued.")
            return
        runs = ", ".join(f"#{pk}" for pk in summary["runs"])
        queued = f"Queued {_errors(summary['queued'])} for retry" + (f" in runs {runs}." if runs else ".")
        self.stdout.write(self.style.SUCCESS(queued) if summary["queued"] else queued)
        for reason, count in sorted(summary["skipped"].items()):
            self.stdout.write(self.style.WARNING(f"Skipped {_errors(count)}: {SKIP_REASONS.get(reason, reason)}."))


def _add_filters(parser):
    parser.add_argument("--org", required=True, help="Organization slug")
    parser.add_argument("--category", action="append", choices=ErrorCategory.values, help="Repeatable")
    parser.add_argument("--code", action="append", help="Error code, e.g. INVALID_EMAIL (repeatable)")
    parser.add_argument("--level", action="append", choices=ErrorLevel.values, help="Repeatable")
    parser.add_argument("--status", action="append", choices=ErrorStatus.values, help="Repeatable")
    parser.add_argument("--mapping", type=int, metavar="ID", help="Mapping id")
    parser.add_argument("--target-connection", type=int, metavar="ID", help="Id of the mappings' target connection")
    parser.add_argument("--run", type=int, metavar="ID", help="Run id")
    parser.add_argument("--since", metavar="ISO", help="Created at or after (ISO 8601 date or date-time)")
    parser.add_argument("--until", metavar="ISO", help="Created before (ISO 8601 date or date-time)")
    parser.add_argument("--search", help="Text in the message, source record id or error code")
    parser.add_argument("--json", action="store_true", help="JSON output (one object per line for list)")


def _filters(organization, options):
    """The selector's keyword arguments; an id of another organization's object fails as clearly as a typo."""
    filters = {name: options[name] for name in ("category", "code", "level", "status", "search")}
    for name, model, label in (
        ("mapping", Mapping, "mapping"),
        ("target_connection", Connection, "connection"),
        ("run", SyncRun, "run"),
    ):
        pk = options[name]
        if pk is not None and not model.objects.for_org(organization).filter(pk=pk).exists():
            raise CommandError(f"No {label} with id {pk} in organization '{organization.slug}'")
        filters[name] = pk
    filters["since"] = _parse_moment(options["since"], "--since")
    filters["until"] = _parse_moment(options["until"], "--until")
    if filters["since"] and filters["until"] and filters["since"] >= filters["until"]:
        raise CommandError("--since must be before --until")
    return filters


def _parse_moment(value, option):
    if value is None:
        return None
    try:
        moment = parse_datetime(value)
        if moment is None and (day := parse_date(value)) is not None:
            moment = datetime(day.year, day.month, day.day)
    except ValueError:
        moment = None
    if moment is None:
        raise CommandError(f"{option} '{value}' is not an ISO 8601 date or date-time (e.g. 2026-11-22T08:00Z)")
    return timezone.make_aware(moment) if timezone.is_naive(moment) else moment


def _errors(count):
    return f"{count} error" + ("" if count == 1 else "s")


def _error_row(error):
    return {
        "id": error.pk,
        "code": str(error.code),
        "organization_id": error.organization_id,
        "mapping_id": error.mapping_id,
        "run_id": error.run_id,
        "level": error.level,
        "category": error.category,
        "error_code": error.error_code,
        "field": error.field,
        "status": error.status,
        "source_record_id": error.source_record_id,
        "message": error.message,
        "attempts": error.attempts,
        "created_at": error.created_at,
    }


def _json_line(value):
    return json.dumps(value, sort_keys=True, default=str)
