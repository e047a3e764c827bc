"""Fault injection (issue 12): workers killed with SIGKILL, a rate-limited target, the database connection dropped
mid-batch, a target that hangs. The real-worker fixtures are tests/syncs/conftest.py's, imported (not copied);
the PostgreSQL tables on both sides are tests/syncs/conftest.py's (`database`).

Every test prints one line of figures and appends it to var/fault-figures.jsonl, which .ci/run prints at the end
of its run. Randomness is seeded: RESYNC_FAULT_SEED=<n> replays a failure with the seed its figures printed.
"""

import json
import os
import random
import time

import pytest
from django.db import connection

from tests.syncs.conftest import ROOT, database, real_queue, start_qcluster, worker_env  # noqa: F401  (fixtures)

FIGURES_FILE = ROOT / "var" / "fault-figures.jsonl"
FIGURE_KEYS = ("runs", "kills", "records", "lost", "duplicates", "refused", "retries", "seconds")


@pytest.fixture
def fault_seed():
    """The seed of this test's random faults: RESYNC_FAULT_SEED, else a new one (printed with the figures)."""
    text = os.environ.get("RESYNC_FAULT_SEED", "").strip()
    return int(text) if text else random.SystemRandom().randrange(1, 10**6)


@pytest.fixture
def fault_figures(request, fault_seed, capsys):
    """figures(**values): the test's one line of figures, printed and appended to var/fault-figures.jsonl.

    Called once the test's assertions have passed; a failing test reports its seed in its assertion messages.
    """
    started = time.monotonic()

    def record(**values):
        line = {"test": request.node.name, "database": connection.vendor, "seed": fault_seed,
                **{key: values.pop(key, 0) for key in FIGURE_KEYS if key != "seconds"},
                "seconds": round(time.monotonic() - started, 1), **values}
        FIGURES_FILE.parent.mkdir(exist_ok=True)
        with FIGURES_FILE.open("a") as out:
            out.write(json.dumps(line) + "\n")
        with capsys.disabled():
            print(f"\nfault figures: {json.dumps(line)}")
        return line

    return record
