"""Real workers: one run of a PostgreSQL table → PostgreSQL table mapping, timed from queued to finished through
django-q2's ORM broker and `manage.py qcluster` processes, and the memory the workers hold while they sync.

    .venv/bin/python bench/workers.py [--records 100000] [--runs 3] [--max-minutes 7] [--million] [--keep]
                                      [--json OUT]

The setup is bench/engine.py's (the same source table, ten-field mapping, 5% bad records, target with a unique
email). Measured, medians of --runs rounds (a 1-cluster run, then a 2-cluster run; fewer rounds, at least one,
when another would end after --max-minutes), each run on a fresh mapping into an empty target, with clusters
started for it (after they are up) and stopped after it:

- 1 cluster: ONE `qcluster` process with RESYNC_WORKERS=1; records/s from sync_run_queue(enqueue=True) to the
  run's finished_at;
- 2 clusters: TWO such processes; its ratio to 1 cluster should be ≥ 1.50. While a run is one task only one
  worker can take it and the ratio is about 1.0; when batches fan out to any worker it should rise;
- peak RSS: the sum of VmRSS over each 1-cluster run's process tree (main process, sentinel, pusher, monitor,
  worker), sampled every 0.2 s from /proc (psutil is not a dependency); ≤ 300 MB. With --million, one more run of
  1,000,000 records (measured once: it takes minutes), whose peak must also be ≤ 300 MB and at most 1.10× the
  peak of the --records runs: memory must not grow with the size of a run. RSS counts the pages the forked
  processes share once per process, so an idle cluster's tree already counts about 350 MB: printed alongside
  are that idle sum, the tree's peak proportional set size (PSS: shared pages counted once in all) and the peak
  of its busiest process alone (VmHWM).

Workers run with DEBUG=false and RESYNC_LOG_LEVEL=WARNING, as in production (with DEBUG on, the settings' default,
Django's query log alone grows a worker by hundreds of MB over a long run). A cluster is stopped with SIGTERM and,
after 20 s, SIGKILL to its whole process group, also when the bench fails. PostgreSQL only: BENCH_DATABASE_URL
(default postgres://postgres@127.0.0.1:5432/resync_bench_workers) is created, migrated and dropped at the end
unless --keep; a second bench on the same database waits for the first. Linux only (/proc).
"""

import argparse
import contextlib
import itertools
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlparse

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(1, str(ROOT / "bench"))

import engine  # noqa: E402  (bench/ is on the path only from here)
from report import Figure, print_table, write_json  # noqa: E402

BENCH = "workers"
DEFAULT_URL = "postgres://postgres@127.0.0.1:5432/resync_bench_workers"
MILLION = 1_000_000
MILLION_TABLE = "contacts_1m"
TARGET_SPEEDUP = 1.50
TARGET_RSS_MB = 300
TARGET_GROWTH = 1.10
SAMPLE_EVERY = 0.2  # seconds
STOP_TIMEOUT = 20  # seconds between SIGTERM and SIGKILL
READY_TIMEOUT = 60  # seconds for a cluster to start its processes
# A cluster's processes: the main one, the sentinel, the pusher, the monitor, and its workers.
PROCESSES_BESIDES_WORKERS = 4
LOG_NUMBERS = itertools.count(1)


# --- processes --------------------------------------------------------------------------------------------------


def children_of():
    """parent pid -> [child pids], for every process now."""
    children = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat") as stat:
                # The command name is in parentheses and may hold spaces: the fields start after the last ")".
                parent = int(stat.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue  # gone meanwhile
        children.setdefault(parent, []).append(int(entry.name))
    return children


def process_tree(roots):
    """The pids of `roots` and all their descendants that are alive."""
    children, found, pending = children_of(), [], list(roots)
    while pending:
        pid = pending.pop()
        if os.path.exists(f"/proc/{pid}"):
            found.append(pid)
            pending += children.get(pid, [])
    return found


def status_kb(pid, key):
    """A "VmRSS:"-style line of /proc/<pid>/status (or "Pss:" of smaps_rollup), in kB; 0 for a process gone."""
    path = f"/proc/{pid}/smaps_rollup" if key == "Pss" else f"/proc/{pid}/status"
    try:
        with open(path) as status:
            for line in status:
                if line.startswith(f"{key}:"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


class Cluster:
    """One `manage.py qcluster` in its own process group, stopped for sure by stop()."""

    def __init__(self, env, log_path):
        self.log_path = log_path
        with open(log_path, "w") as log:
            self.process = subprocess.Popen(
                [sys.executable, "manage.py", "qcluster"], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    @property
    def pid(self):
        return self.process.pid

    def stop(self):
        if self.process.poll() is None:
            # SIGTERM to the main process only: it stops its sentinel, which drains the workers. A signal to the
            # whole group would kill the sentinel at once and leave the main process waiting for it.
            self.process.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=STOP_TIMEOUT)
        # Whatever is left of the group (a worker stuck in a statement, an orphaned child) goes now.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()

    def log_tail(self, lines=20):
        with contextlib.suppress(OSError):
            return "".join(Path(self.log_path).read_text().splitlines(keepends=True)[-lines:])
        return ""


@contextlib.contextmanager
def clusters_running(count, env, log_dir):
    """`count` clusters of RESYNC_WORKERS=1, up and idle when the block starts, stopped when it ends."""
    clusters = []
    try:
        for _ in range(count):
            clusters.append(Cluster(env, Path(log_dir) / f"qcluster-{next(LOG_NUMBERS)}.log"))
        expected = count * (PROCESSES_BESIDES_WORKERS + 1)
        deadline = time.monotonic() + READY_TIMEOUT
        while len(process_tree([cluster.pid for cluster in clusters])) < expected:
            dead = [cluster for cluster in clusters if cluster.process.poll() is not None]
            if dead or time.monotonic() > deadline:
                raise RuntimeError(f"a qcluster did not start; its log ends:\n{(dead or clusters)[0].log_tail()}")
            time.sleep(0.1)
        time.sleep(1)  # the workers' own imports, after the processes exist
        yield clusters
    finally:
        for cluster in clusters:
            cluster.stop()


def worker_env(url):
    # DEBUG off as in production: with it on, each worker keeps the text of its last 9000 SQL statements (Django's
    # query log), a few hundred MB that grow with the run until the log is full.
    return {**os.environ, "DATABASE_URL": url, "RESYNC_WORKERS": "1", "RESYNC_ALLOW_PRIVATE_URLS": "true",
            "RESYNC_LOG_LEVEL": "WARNING", "DEBUG": "false", "PYTHONUNBUFFERED": "1"}


# --- one run -------------------------------------------------------------------------------------------------------


class Sample:
    """What one run of a cluster setup measured."""

    def __init__(self, seconds, run, *, idle_rss, peak_rss, peak_pss, busiest):
        self.seconds, self.run = seconds, run
        self.idle_rss, self.peak_rss, self.peak_pss, self.busiest = idle_rss, peak_rss, peak_pss, busiest  # MB

    def line(self):
        return (f"{self.seconds:.1f} s ({self.run.status}), RSS {self.idle_rss:.0f} MB idle, peak {self.peak_rss:.0f}"
                f" MB; peak PSS {self.peak_pss:.0f} MB; busiest process {self.busiest:.0f} MB")


def tree_kb(pids, key):
    return sum(status_kb(pid, key) for pid in pids)


def timed_run(mapping, clusters, records):
    """One queued run of `mapping`, timed from queued to finished, the clusters' memory sampled meanwhile."""
    from django.utils import timezone

    from syncs.models import SyncRun
    from syncs.services import sync_run_queue

    roots = [cluster.pid for cluster in clusters]
    # Generous: a worker an order of magnitude slower than today's still finishes; a stuck one does not hang make.
    deadline = time.monotonic() + max(300, records / 100)
    idle_rss = tree_kb(process_tree(roots), "VmRSS")
    peak_rss = peak_pss = 0
    queued_at = timezone.now()
    run = sync_run_queue(mapping=mapping, enqueue=True)
    while True:
        pids = process_tree(roots)
        peak_rss = max(peak_rss, tree_kb(pids, "VmRSS"))
        peak_pss = max(peak_pss, tree_kb(pids, "Pss"))
        run = SyncRun.objects.get(pk=run.pk)
        if run.is_finished:
            break
        dead = [cluster for cluster in clusters if cluster.process.poll() is not None]
        if dead or time.monotonic() > deadline:
            raise RuntimeError(f"run {run.pk} is {run.status} {'after a qcluster died' if dead else 'at the timeout'};"
                               f" the log ends:\n{(dead or clusters)[0].log_tail()}")
        time.sleep(SAMPLE_EVERY)
    # The kernel's own high-water mark of each process catches a peak between two samples.
    busiest = max(status_kb(pid, "VmHWM") for pid in process_tree(roots))
    if run.system_error:
        raise RuntimeError(f"run {run.pk} stopped with a system error: {run.system_error}")
    if run.created + run.failed != records or run.created != engine.good_count(records):
        raise RuntimeError(f"run {run.pk}: created {run.created} + failed {run.failed}, expected "
                           f"{engine.good_count(records)} + {records - engine.good_count(records)} ({run.counts()})")
    return Sample((run.finished_at - queued_at).total_seconds(), run, idle_rss=idle_rss / 1024,
                  peak_rss=peak_rss / 1024, peak_pss=peak_pss / 1024, busiest=busiest / 1024)


def one_run(url, organization, source, target, *, clusters, records, log_dir, name, source_object=engine.TABLE):
    engine.table_empty(url, engine.TARGET_SCHEMA)
    engine.bookkeeping_empty()
    mapping = engine.mapping_create(organization, source, target, name=name, batch_size=1000,
                                    source_object=source_object)
    with clusters_running(clusters, worker_env(url), log_dir) as running:
        return timed_run(mapping, running, records)


# --- the bench --------------------------------------------------------------------------------------------------


def parser_build():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--max-minutes", type=float, default=7,
                        help="make fewer runs (at least one) when another would end after this many minutes")
    parser.add_argument("--million", action="store_true", help="also the peak RSS of a run of 1,000,000 records")
    parser.add_argument("--keep", action="store_true", help="leave the bench database in place")
    parser.add_argument("--json", metavar="OUT", help="also write the figures to OUT as JSON")
    return parser


def figures(argv=None):
    args = parser_build().parse_args(argv)
    url = os.environ.get("BENCH_DATABASE_URL", DEFAULT_URL)
    with engine.database_lock(url):
        engine.database_create(url)
        engine.django_setup(url)
        try:
            with tempfile.TemporaryDirectory(prefix="resync-bench-workers-") as log_dir:
                return measure(url, args, log_dir)
        finally:
            if not args.keep:
                engine.database_drop(url)


def measure(url, args, log_dir):
    records = args.records
    print(f"workers: {records} records, {args.runs} runs per setup"
          f"{', and one run of 1,000,000' if args.million else ''}; database {urlparse(url).path.lstrip('/')}; "
          f"{engine.machine()}", flush=True)
    engine.source_create(url, records)
    if args.million:
        engine.source_create(url, MILLION, table=MILLION_TABLE)
    engine.target_create(url)
    organization = engine.organization_create()
    source, target = engine.connections_create(url, organization)

    samples = {1: [], 2: []}
    started = time.monotonic()
    for number in range(1, args.runs + 1):
        # One cluster, then two, in every round: a drift of the machine over the bench touches both alike.
        for clusters in (1, 2):
            sample = one_run(url, organization, source, target, clusters=clusters, records=records, log_dir=log_dir,
                             name=f"bench {clusters} {number}")
            samples[clusters].append(sample)
            print(f"  {clusters} cluster{'s' if clusters > 1 else ' '}, run {number}/{args.runs}: {sample.line()}",
                  flush=True)
        spent = time.monotonic() - started
        if number < args.runs and spent * (number + 1) / number > args.max_minutes * 60:
            print(f"  stopping after {number} of {args.runs} runs: another would pass --max-minutes "
                  f"{args.max_minutes:g}", flush=True)
            break

    print(f"  done: {engine.machine()}", flush=True)

    def median(clusters, name):
        return statistics.median(getattr(sample, name) for sample in samples[clusters])

    runs = len(samples[1])
    of = "" if runs == args.runs else f" (median of {runs} runs)"
    one, two = (records / median(count, "seconds") for count in (1, 2))
    peak = median(1, "peak_rss")
    result = [
        Figure(BENCH, f"one run of {records}, 1 cluster × 1 worker{of}", one, "records/s"),
        Figure(BENCH, f"one run of {records}, 2 clusters × 1 worker{of}", two, "records/s", baseline="1 cluster",
               ratio=two / one, target=f"ratio ≥ {TARGET_SPEEDUP:.2f}", holds=two / one >= TARGET_SPEEDUP),
        Figure(BENCH, f"peak RSS, 1 cluster's tree, run of {records}", peak, "MB", target=f"≤ {TARGET_RSS_MB} MB",
               holds=peak <= TARGET_RSS_MB),
        Figure(BENCH, "  RSS of that tree when idle", median(1, "idle_rss"), "MB"),
        Figure(BENCH, "  peak PSS of that tree (shared pages once)", median(1, "peak_pss"), "MB"),
        Figure(BENCH, "  peak RSS of its busiest process (VmHWM)", median(1, "busiest"), "MB"),
    ]
    if args.million:
        sample = one_run(url, organization, source, target, clusters=1, records=MILLION, log_dir=log_dir,
                         name="bench million", source_object=MILLION_TABLE)
        print(f"  1 cluster , run of {MILLION}: {sample.line()}; {engine.machine()}", flush=True)
        growth = sample.peak_rss / peak
        result += [
            Figure(BENCH, f"one run of {MILLION}, 1 cluster × 1 worker", MILLION / sample.seconds, "records/s"),
            Figure(BENCH, f"peak RSS, 1 cluster's tree, run of {MILLION}", sample.peak_rss, "MB",
                   baseline=f"peak RSS @{records}", ratio=growth,
                   target=f"≤ {TARGET_RSS_MB} MB, ratio ≤ {TARGET_GROWTH:.2f}",
                   holds=sample.peak_rss <= TARGET_RSS_MB and growth <= TARGET_GROWTH),
            Figure(BENCH, "  peak PSS of that tree (shared pages once)", sample.peak_pss, "MB",
                   baseline=f"peak PSS @{records}", ratio=sample.peak_pss / median(1, "peak_pss")),
            Figure(BENCH, "  peak RSS of its busiest process (VmHWM)", sample.busiest, "MB",
                   baseline=f"busiest @{records}", ratio=sample.busiest / median(1, "busiest")),
        ]
    return result


def main(argv=None):
    args = parser_build().parse_args(argv)
    result = figures(argv)
    print()
    print_table(result)
    if args.json:
        write_json(result, args.json)
    return result


if __name__ == "__main__":
    main()
