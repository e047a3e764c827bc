"""python manage.py sync --org SLUG [--mapping ID] [--wait] [--inline] [--json]"""

import json
import time
import uuid

from django.core.management.base import BaseCommand, CommandError

from accounts.models import Organization
from mappings.models import Mapping
from syncs.engine import sync_run_execute
from syncs.models import SyncRun
from syncs.services import sync_run_summary, sync_runs_queue_for_org


class Command(BaseCommand):
    help = "Queue a sync of an organization's active mappings for the workers, optionally wait and report."

    def add_arguments(self, parser):
        parser.add_argument("--org", required=True, help="Organization slug")
        parser.add_argument("--mapping", action="append", metavar="ID",
                            help="Mapping id, as the API and the UI show it (repeatable); default: all")
        parser.add_argument("--wait", action="store_true", help="Wait for the workers to finish the runs")
        parser.add_argument("--inline", action="store_true", help="Run in this process instead of the workers")
        parser.add_argument("--json", action="store_true", help="One JSON object per run, one per line")
        parser.add_argument("--timeout", type=float, default=600, help="Seconds to wait with --wait")

    def handle(self, *args, org, mapping, wait, inline, json: bool, timeout, **options):
        organization = Organization.objects.filter(slug=org).first()
        if organization is None:
            raise CommandError(f"No organization with slug '{org}'")
        mapping_ids = _mapping_pks(organization, mapping) if mapping else None
        runs = sync_runs_queue_for_org(organization=organization, mapping_ids=mapping_ids, enqueue=not inline)
        if not runs:
            raise CommandError("No active mapping to sync")
        if inline:
            for run in runs:
                sync_run_execute(run_id=run.pk)
        elif wait:
            self.wait_for(runs, timeout)
        for run in SyncRun.objects.select_related("mapping").filter(pk__in=[r.pk for r in runs]).order_by("pk"):
            summary = sync_run_summary(run)
            if json:
                self.stdout.write(_json_line(summary))
            else:
                counts = ", ".join(f"{k} {v}" for k, v in summary["counts"].items())
                self.stdout.write(f"Run {run.code} of '{run.mapping.name}': {run.status} ({counts})")
                for category, n in summary["errors_by_category"].items():
                    self.stdout.write(f"  {n} {category} error(s)")

    def wait_for(self, runs, timeout):
        deadline = time.monotonic() + timeout
        codes = {run.pk: run.code for run in runs}
        pending = set(codes)
        while pending:
            finished = {run.pk for run in SyncRun.objects.filter(pk__in=pending) if run.is_finished}
            pending -= finished
            if not pending:
                return
            if time.monotonic() > deadline:
                # Named by the ids the API, the UI and `runs retry-failures` know them by, never by primary key.
                late = ", ".join(sorted(str(codes[pk]) for pk in pending))
                raise CommandError(
                    f"Runs {late} did not finish within {timeout:.0f} s: is a worker running "
                    "(python manage.py qcluster)?"
                )
            time.sleep(0.5)


def _mapping_pks(organization, codes):
    """Primary keys of the organization's mappings with these ids; another organization's id fails as clearly as
    a typo, not as "nothing to sync"."""
    wanted = []
    for code in codes:
        try:
            wanted.append(uuid.UUID(code))
        except ValueError:
            raise CommandError(f"'{code}' is not a mapping id (ids look like 6f1c2a3e-…)") from None
    found = dict(Mapping.objects.for_org(organization).filter(code__in=wanted).values_list("code", "pk"))
    missing = [str(code) for code in wanted if code not in found]
    if missing:
        raise CommandError(f"No mapping with id {', '.join(missing)} in organization '{organization.slug}'")
    return [found[code] for code in wanted]


def _json_line(value):
    return json.dumps(value, sort_keys=True, default=str)
