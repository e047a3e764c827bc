"""Every page of the browser UI rendered as the demo user, against the 300 ms budget and a trivial page measured in
the same run.

    .venv/bin/python bench/pages.py [--repeat 20] [--syncs 2] [--json OUT]

On the embedded default (SQLite with the settings' own options) in a temporary file: migrated, given the demo
organization by `manage.py demo`, then synced --syncs times in this process (`manage.py sync --inline`, the demo
sandbox answering in-process, its faults included), so that runs, errors of each kind, groups and links are real.
The pages are those of config/ui_pages.py (every named route of the UI's URLconfs, with the demo's objects), so a
page added later is measured without being listed here; a route whose URL needs an object the demo lacks is
reported as skipped, and an action (a GET answers 405) is counted and left out. Each page is requested through
Django's test Client once to warm up, then --repeat times; the figure is the median. The baseline is the login
page requested by the logged-in demo user: the middleware, the session and user, the layout with its navigation,
and no data of the page's own, so the ratio says what a page costs over the frame every page pays for. The
anonymous login page (no session, no layout data) is printed too, for information.
"""

import argparse
import logging
import os
import secrets
import statistics
import sys
import tempfile
import time
from io import StringIO
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

BUDGET_MS = 300.0
BASELINE = "/login/ as the demo user"


def parser_build():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=20, help="Timed requests per page (after one warm-up).")
    parser.add_argument("--syncs", type=int, default=2, help="Syncs of every demo mapping before measuring.")
    parser.add_argument("--json", metavar="OUT", help="Also write the figures to OUT as JSON (bench/report.py).")
    return parser


def setup(directory):
    """Django on a new SQLite file in `directory`, as a production process would run (DEBUG off)."""
    os.environ["DATABASE_URL"] = f"sqlite:///{directory}/pages.sqlite3"
    os.environ["DEBUG"] = "false"
    os.environ.setdefault("SECRET_KEY", secrets.token_urlsafe(64))
    os.environ["RESYNC_LOG_LEVEL"] = "CRITICAL"  # the demo sync's record errors are data here, not news
    os.environ["RESYNC_SANDBOX_IN_PROCESS"] = "true"
    os.environ["DJANGO_SETTINGS_MODULE"] = "config.settings"
    import django

    django.setup()
    from django.conf import settings

    # One call, one answer: the demo CRM's faults become errors at once instead of sleeping through retries.
    settings.RESYNC_HTTP_RETRY_DELAYS = []
    settings.RESYNC_INLINE_RETRY_AFTER_MAX = 0
    import django_q.conf  # noqa: F401  (it sets its logger's level when imported: set ours after it)

    logging.getLogger("django-q").setLevel(logging.WARNING)


def demo_build(syncs):
    """The demo organization, synced `syncs` times; returns it and its user."""
    from django.core.management import call_command

    from accounts.models import Organization

    call_command("migrate", verbosity=0)
    call_command("demo", stdout=StringIO())
    for _ in range(syncs):
        call_command("sync", org="demo", inline=True, stdout=StringIO())
    organization = Organization.objects.get(slug="demo")
    return organization, organization.memberships.get().user


def timed_ms(client, url, repeat):
    """(status, median ms) of GETs of `url` after one warm-up."""
    status = client.get(url).status_code
    timings = []
    for _ in range(repeat):
        started = time.perf_counter()
        response = client.get(url)
        timings.append((time.perf_counter() - started) * 1000)
        status = response.status_code
    return status, statistics.median(timings)


def measure(argv=()):
    args = parser_build().parse_args(argv)
    load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="resync-bench-pages-") as directory:
        setup(directory)
        from django.db import connection
        from django.test import Client

        from config.ui_pages import ui_pages
        from syncs.models import RecordError, SyncRun

        started = time.monotonic()
        organization, user = demo_build(args.syncs)
        runs = SyncRun.objects.for_org(organization).count()
        errors = RecordError.objects.for_org(organization).count()
        print(f"demo organization: {runs} runs, {errors} record errors ({time.monotonic() - started:.1f} s to build);"
              f" {args.repeat} requests per page after a warm-up, load average {load:.2f}", flush=True)

        anonymous_status, anonymous_ms = timed_ms(Client(), "/login/", args.repeat)
        assert anonymous_status == 200, anonymous_status
        print(f"  {'/login/, anonymous (for information)':<58} {anonymous_ms:8.1f} ms", flush=True)
        client = Client()
        client.force_login(user)
        baseline_status, baseline_ms = timed_ms(client, "/login/", args.repeat)
        assert baseline_status == 200, baseline_status
        print(f"  {'baseline: ' + BASELINE:<58} {baseline_ms:8.1f} ms   1.00x", flush=True)
        rows, skipped, actions = [], [], []
        for page in ui_pages(organization):
            if page.skipped:
                skipped.append((page.name, page.skipped))
                print(f"  {page.name:<58} skipped: {page.skipped}", flush=True)
                continue
            if client.get(page.url).status_code == 405:
                actions.append(page.name)
                continue
            status, median_ms = timed_ms(client, page.url, args.repeat)
            rows.append({"name": page.name, "url": page.url, "status": status, "median_ms": round(median_ms, 2),
                         "ratio": round(median_ms / baseline_ms, 2), "holds": median_ms <= BUDGET_MS})
            verdict = "" if median_ms <= BUDGET_MS else f"  OVER the {BUDGET_MS:.0f} ms budget"
            print(f"  {page.name:<58} {median_ms:8.1f} ms {median_ms / baseline_ms:6.2f}x"
                  f"{'' if status == 200 else f'  (answered {status})'}{verdict}", flush=True)
        connection.close()
    load = max(load, os.getloadavg()[0])
    print(f"{len(rows)} pages measured, {sum(row['holds'] for row in rows)} within {BUDGET_MS:.0f} ms; "
          f"{len(skipped)} skipped; {len(actions)} actions (POST only) not pages: {', '.join(actions)}", flush=True)
    return {"baseline_ms": round(baseline_ms, 2), "anonymous_ms": round(anonymous_ms, 2), "pages": rows,
            "skipped": skipped, "actions": actions,
            "runs": runs, "errors": errors, "repeat": args.repeat, "load_average": round(load, 2)}


def figures(argv=None):
    """The figures in the shape of bench/report.py: median ms per page, its ratio to the baseline."""
    from report import Figure

    measured = measure(argv or ())
    out = [Figure("pages", "/login/, anonymous (information)", measured["anonymous_ms"], "ms"),
           Figure("pages", f"baseline: {BASELINE}", measured["baseline_ms"], "ms")]
    for row in measured["pages"]:
        status = "" if row["status"] == 200 else f" (answered {row['status']})"
        out.append(Figure("pages", f"{row['name']}{status}: median", row["median_ms"], "ms", baseline="login",
                          ratio=row["ratio"], target=f"≤ {BUDGET_MS:.0f} ms", holds=row["holds"]))
    for name, why in measured["skipped"]:
        out.append(Figure("pages", f"{name}: skipped, {why}", float("nan"), ""))
    return out


def main(argv=None):
    from report import print_table, write_json

    argv = sys.argv[1:] if argv is None else argv
    args = parser_build().parse_args(argv)
    rest = [arg for arg in argv if arg != args.json and arg != "--json"]
    found = figures(rest)
    print_table(found)
    if args.json:
        write_json(found, args.json)
    return found


if __name__ == "__main__":
    main()
