"""python manage.py errors {list,retry,ignore,resolve} --org SLUG [--id ID ...] [filters] [--all] [--json]

Ids are the same UUIDs the API and the UI show. Filters (each optional, the repeatable ones match any of their
values): --category C, --code X, --level L, --status S, --mapping ID, --target-connection ID, --run ID,
--blocking RUN_ID, --since ISO, --until ISO, --search TEXT. `retry`, `ignore` and `resolve` act on the errors
named with --id, or on every open error matching the filters; with neither, --all says "every open error of the
organization". `retry` adds --force (overwrite target records that changed after the failure), `ignore` needs
--reason, `resolve` takes --note.
"""

import json
import uuid
from datetime import datetime

from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone
from django.utils.dateparse import parse_date, parse_datetime

from accounts.models import Organization
from integrations.errors import ErrorCategory
from integrations.models import Connection
from mappings.models import Mapping
from syncs.models import ErrorLevel, ErrorStatus, RecordError, Resolution, SyncRun
from syncs.retries import SKIP_REASONS, errors_retry
from syncs.review import errors_close
from syncs.selectors import record_errors_matching


class Command(BaseCommand):
    help = "List, retry, ignore or resolve an organization's record errors, by id or by filters."

    def add_arguments(self, parser):
        actions = parser.add_subparsers(dest="action", required=True, metavar="{list,retry,ignore,resolve}")
        listing = actions.add_parser("list", help="One line per matching error (newest first)")
        _add_filters(listing)
        listing.add_argument("--limit", type=int, help="Show at most this many errors")
        retry = actions.add_parser("retry", help="Retry the errors in one replay run per mapping")
        _add_filters(retry, acting=True)
        retry.add_argument(
            "--force", action="store_true", help="Overwrite target records that changed after the failure"
        )
        ignore = actions.add_parser("ignore", help="Close the errors on purpose, with a reason")
        _add_filters(ignore, acting=True)
        ignore.add_argument("--reason", required=True, help="Why these records are ignored (kept on each error)")
        resolve = actions.add_parser("resolve", help="Close the errors as fixed by hand")
        _add_filters(resolve, acting=True)
        resolve.add_argument("--note", default="", help="An optional note kept on each error")

    def handle(self, *args, action, **options):
        organization = Organization.objects.filter(slug=options["org"]).first()
        if organization is None:
            raise CommandError(f"No organization with slug '{options['org']}'")
        filters = _filters(organization, options)
        if action == "list":
            errors = record_errors_matching(organization=organization, **filters)
            if options["ids"]:
                errors = errors.filter(pk__in=_error_pks(organization, options["ids"]))
            self.list_errors(errors, limit=options["limit"], as_json=options["json"])
            return
        selection = self.selection(organization, filters, options)
        if action == "retry":
            summary = errors_retry(organization=organization, resolution=Resolution.BULK_RETRY,
                                   force=options["force"], **selection)
            self.report_retry(organization, summary, as_json=options["json"])
        else:
            status, note = ((ErrorStatus.IGNORED, options["reason"]) if action == "ignore"
                            else (ErrorStatus.RESOLVED, options["note"]))
            if action == "ignore" and not note.strip():
                raise CommandError("--reason must say why these records are ignored")
            summary = errors_close(organization=organization, status=status, note=note, **selection)
            self.report_close(summary, done="ignored" if action == "ignore" else "marked resolved",
                              as_json=options["json"])

    def selection(self, organization, filters, options):
        """error_ids, or the queryset of the filters: acting on every open error takes --all."""
        given = any(value not in (None, []) for value in filters.values())
        if options["ids"]:
            if given or options["all"]:
                raise CommandError("Give either --id or filters (or --all), not both")
            return {"error_ids": _error_pks(organization, options["ids"])}
        if not given and not options["all"]:
            raise CommandError("Name errors with --id or filters, or say --all for every open error of the "
                               "organization")
        return {"queryset": record_errors_matching(organization=organization, **filters)}

    def list_errors(self, errors, *, limit, as_json):
        if limit is not None:
            errors = errors[: max(limit, 0)]
        for error in errors.select_related("mapping", "run").iterator():
            if as_json:
                self.stdout.write(_json_line(_error_row(error)))
            else:
                message = " ".join(error.message.split())
                self.stdout.write(
                    f"{error.code}\t{error.level}\t{error.category}\t{error.error_code or '-'}\t{error.status}\t"
                    f"{error.source_record_id or '-'}\t{message}"
                )

    def report_retry(self, organization, summary, *, as_json):
        codes = dict(SyncRun.objects.for_org(organization).filter(pk__in=summary["runs"]).values_list("pk", "code"))
        summary = {**summary, "runs": [str(codes[pk]) for pk in summary["runs"]]}
        if as_json:
            self.stdout.write(_json_line(summary))
            return
        if not summary["queued"] and not summary["skipped"]:
            self.stdout.write("No error matches: nothing queued.")
            return
        runs = ", ".join(summary["runs"])
        queued = f"Queued {_errors(summary['queued'])} for retry" + (f" in runs {runs}." if runs else ".")
        self.stdout.write(self.style.SUCCESS(queued) if summary["queued"] else queued)
        for reason, count in sorted(summary["skipped"].items()):
            self.stdout.write(self.style.WARNING(f"Skipped {_errors(count)}: {SKIP_REASONS.get(reason, reason)}."))

    def report_close(self, summary, *, done, as_json):
        if as_json:
            self.stdout.write(_json_line(summary))
            return
        if not summary["closed"] and not summary["skipped"]:
            self.stdout.write(f"No open error matches: nothing {done}.")
            return
        closed = f"{_errors(summary['closed']).capitalize()} {done}."
        self.stdout.write(self.style.SUCCESS(closed) if summary["closed"] else closed)
        if summary["skipped"]:
            self.stdout.write(self.style.WARNING(
                f"Skipped {_errors(summary['skipped']['already_resolved'])} already resolved or ignored."))


def _add_filters(parser, *, acting=False):
    parser.add_argument("--org", required=True, help="Organization slug")
    parser.add_argument("--id", dest="ids", action="append", metavar="ID", default=[],
                        help="An error's id (repeatable)")
    parser.add_argument("--category", action="append", choices=ErrorCategory.values, help="Repeatable")
    parser.add_argument("--code", action="append", help="Error code, e.g. INVALID_EMAIL (repeatable)")
    parser.add_argument("--level", action="append", choices=ErrorLevel.values, help="Repeatable")
    parser.add_argument("--status", action="append", choices=ErrorStatus.values, help="Repeatable")
    parser.add_argument("--mapping", metavar="ID", help="Mapping id")
    parser.add_argument("--target-connection", metavar="ID", help="Id of the mappings' target connection")
    parser.add_argument("--run", metavar="ID", help="Run id")
    parser.add_argument("--blocking", metavar="RUN_ID", help="The errors that keep this run from being recovered")
    parser.add_argument("--since", metavar="ISO", help="Created at or after (ISO 8601 date or date-time)")
    parser.add_argument("--until", metavar="ISO", help="Created before (ISO 8601 date or date-time)")
    parser.add_argument("--search", help="Text in the message, source record id or error code")
    if acting:
        parser.add_argument("--all", action="store_true", help="Every open error of the organization")
    else:
        parser.set_defaults(all=False)
    parser.add_argument("--json", action="store_true", help="JSON output (one object per line for list)")


def _filters(organization, options):
    """The selector's keyword arguments; an id of another organization's object fails as clearly as a typo."""
    filters = {name: options[name] for name in ("category", "code", "level", "status", "search")}
    for name, model, label in (
        ("mapping", Mapping, "mapping"),
        ("target_connection", Connection, "connection"),
        ("run", SyncRun, "run"),
        ("blocking", SyncRun, "run"),
    ):
        code = options[name]
        filters[name] = None
        if code is not None:
            found = model.objects.for_org(organization).filter(code=_uuid(code, label)).first()
            if found is None:
                raise CommandError(f"No {label} with id {code} in organization '{organization.slug}'")
            filters[name] = found
    filters["since"] = _parse_moment(options["since"], "--since")
    filters["until"] = _parse_moment(options["until"], "--until")
    if filters["since"] and filters["until"] and filters["since"] >= filters["until"]:
        raise CommandError("--since must be before --until")
    return filters


def _error_pks(organization, codes):
    wanted = [_uuid(code, "error") for code in codes]
    found = dict(RecordError.objects.for_org(organization).filter(code__in=wanted).values_list("code", "pk"))
    missing = [str(code) for code in wanted if code not in found]
    if missing:
        raise CommandError(f"No error with id {', '.join(missing)} in organization '{organization.slug}'")
    return [found[code] for code in dict.fromkeys(wanted)]


def _uuid(value, label):
    try:
        return uuid.UUID(str(value))
    except ValueError:
        raise CommandError(f"'{value}' is not {_article(label)} {label} id (ids look like 6f1c2a3e-…)") from None


def _article(noun):
    return "an" if noun[0] in "aeiou" else "a"


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
        "id": str(error.code),
        "mapping": {"id": str(error.mapping.code), "name": error.mapping.name},
        "run": str(error.run.code),
        "level": error.level,
        "category": error.category,
        "code": error.error_code,
        "field": error.field,
        "status": error.status,
        "source_record_id": error.source_record_id,
        "message": error.message,
        "attempts": error.attempts,
        "created_at": error.created_at,
    }


def _json_line(value):
    return json.dumps(value, sort_keys=True, default=str)
