"""python manage.py runs retry-failures RUN_ID [--force] [--json]

Run ids are global primary keys: this is a staff command, so it needs no organization, but it names the one
the run belongs to.
"""

import json

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
        retry.add_argument("run_id", type=int, metavar="RUN_ID")
        retry.add_argument(
            "--force", action="store_true", help="Overwrite target records that changed after the failure"
        )
        retry.add_argument("--json", action="store_true", help="One JSON object")

    def handle(self, *args, action, run_id, force, json: bool, **options):
        run = SyncRun.objects.select_related("organization", "mapping").filter(pk=run_id).first()
        if run is None:
            raise CommandError(f"No run with id {run_id}")
        try:
            child = sync_run_retry_failures(run=run, force=force)
        except ValidationError as exc:
            raise CommandError(f"Run {run.pk} ({run.organization.slug}): {' '.join(exc.messages)}") from exc
        retried = {"errors": len(child.options.get("errors") or []), "batches": len(child.options.get("batches") or [])}
        if json:
            self.stdout.write(
                _json_line(
                    {
                        "run": run.pk,
                        "organization": run.organization.slug,
                        "mapping": run.mapping.name,
                        "mapping_id": run.mapping_id,
                        "child_run": child.pk,
                        "root_run": child.root_id,
                        **retried,
                    }
                )
            )
            return
        self.stdout.write(
            self.style.SUCCESS(
                f"Queued run {child.pk} to retry the failures of run {run.pk} of '{run.mapping.name}' "
                f"(organization {run.organization.slug}): {retried['errors']} error(s), "
                f"{retried['batches']} of them failed batches."
            )
        )


def _json_line(value):
    return json.dumps(value, sort_keys=True, default=str)
