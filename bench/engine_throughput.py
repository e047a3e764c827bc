"""Sync engine throughput, as ratios against a baseline measured in the same run.

    .venv/bin/python bench/engine_throughput.py [--records 2000] [--repeat 3]

Baseline: bulk-inserting the same records straight into a sandbox (the floor cost of storing them at all).
Measured: a first sync that creates every record, and a second full sync that finds them all unchanged.
Runs on a throwaway SQLite database unless BENCH_DATABASE_URL is set. Prints medians.
"""

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--records", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    tmp = tempfile.mkdtemp(prefix="resync-bench-")
    os.environ["DATABASE_URL"] = os.environ.get("BENCH_DATABASE_URL", f"sqlite:///{tmp}/bench.sqlite3")
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    os.environ["RESYNC_LOG_LEVEL"] = "WARNING"
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)

    from accounts.models import Organization
    from integrations.connectors.sandbox import seed_records
    from integrations.models import Connection
    from mappings.models import FieldMapping, Mapping
    from syncs.engine import sync_run_execute
    from syncs.services import sync_run_queue

    rows = [
        {"email": f"p{n}@example.com", "first_name": f"First{n}", "last_name": f"Last{n}", "phone": "+14155550100"}
        for n in range(args.records)
    ]
    results = {"baseline bulk insert": [], "first sync (create)": [], "second sync (unchanged)": []}
    for round_number in range(args.repeat):
        org = Organization.objects.create(name=f"Bench {round_number}", slug=f"bench-{round_number}")
        connections = []
        for name in ("source", "target", "floor"):
            connection = Connection(organization=org, name=name, provider="sandbox")
            connection.credentials = {"api_key": "bench"}
            connection.save()
            connections.append(connection)
        source, target, floor = connections
        seed_records(source, "contacts", rows)
        mapping = Mapping.objects.create(
            organization=org, name="bench", source_connection=source, source_object="contacts",
            target_connection=target, target_object="contacts", match_keys=[{"source": "email", "target": "email"}],
        )
        for position, field in enumerate(("email", "first_name", "last_name", "phone")):
            FieldMapping.objects.create(organization=org, mapping=mapping, source_field=field, target_field=field,
                                        transforms=[{"name": "trim"}], position=position)

        started = time.perf_counter()
        seed_records(floor, "contacts", rows)
        results["baseline bulk insert"].append(time.perf_counter() - started)

        for label, options in (("first sync (create)", {}), ("second sync (unchanged)", {"full": True})):
            run = sync_run_queue(mapping=mapping, enqueue=False, options=options)
            started = time.perf_counter()
            sync_run_execute(run_id=run.pk)
            results[label].append(time.perf_counter() - started)
            run.refresh_from_db()
            assert run.status == "succeeded", (run.status, run.counts())

    baseline = statistics.median(results["baseline bulk insert"])
    database = os.environ["DATABASE_URL"].split(":")[0]
    print(f"{args.records} records, median of {args.repeat} rounds, database {database}")
    for label, timings in results.items():
        median = statistics.median(timings)
        print(f"  {label:26} {median:8.3f} s  {args.records / median:9.0f} records/s  "
              f"{median / baseline:6.1f}x baseline")


if __name__ == "__main__":
    main()
