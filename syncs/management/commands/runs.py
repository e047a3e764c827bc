"""python manage.py runs retry-failures RUN_ID [--force] [--json]

RUN_ID is the run's id as the API and the UI show it (a UUID). This is a staff command, so it needs no
organization, but it names the one the run belongs to.
"""

import json
import uuid

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from syncs.chains import sync_run_retry_failures
from syncs.models import SyncRun


class Command(BaseCommand):
    help = "Recovery actions on one sync run."

    def add_arguments(self, parser):
        actions = parser.add_subparsers(dest="action", required=True, metavar="{retry-failures}")
        retry = actions.add_parser(
            "retry-failures", help="Queue a child run that retries the run's failed batches and records"
        )
        retry.add_argument("run_id", metavar="RUN_ID")
        retry.add_argument(
            "--force", action="store_true", help="Overwrite target records that changed after the failure"
        )
        retry.add_argument("--json", action="store_true", help="One JSON object")

    def handle(self, *args, action, run_id, force, json: bool, **options):
        try:
            code = uuid.UUID(run_id)
        except ValueError:
            raise CommandError(f"'{run_id}' is not a run id (run ids look like 6f1c2a3e-…)") from None
        run = SyncRun.objects.select_related("organization", "mapping").filter(code=code).first()
        if run is None:
            raise CommandError(f"No run with id {run_id}")
        try:
            child = sync_run_retry_failures(run=run, force=force)
        except ValidationError as exc:
            raise CommandError(f"Run {run.code} ({run.organization.slug}): {' '.join(exc.messages)}") from exc
        retried = {"errors": len(child.options.get("errors") or []), "batches": len(child.options.get("batches") or [])}
        if json:
            self.stdout.write(
                _json_line(
                    {
                        "run": str(run.code),
                        "organization": run.organization.slug,
                        "mapping": {"id": str(run.mapping.code), "name": run.mapping.name},
                        "child_run": str(child.code),
                        "root_run": str((child.root or child).code),
                        **retried,
                    }
                )
            )
            return
        self.stdout.write(
            self.style.SUCCESS(
                f"Queued run {child.code} to retry the failures of run {run.code} of '{run.mapping.name}' "
                f"(organization {run.organization.slug}): {retried['errors']} error(s), "
                f"{retried['batches']} of them failed batches."
            )
        )


def _json_line(value):
    return json.dumps(value, sort_keys=True, default=str)
