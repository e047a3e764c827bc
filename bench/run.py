"""Every bench of bench/, one after the other, each in its own process, then one table of all their figures.

    .venv/bin/python bench/run.py [NAME ...]        (`make bench` runs it with no names: every bench)

A bench is a module of bench/ that exposes `figures(argv=None)` (see bench/report.py). Each is first imported in a
subprocess to see whether it does (a module that does not yet is skipped, with a note), then run as
`python bench/<name>.py --json OUT` with its own defaults, its output shown as it comes. A bench that crashes (exits
non-zero or writes no figures) does not stop the others; run.py then exits 1 after the table. A missed target is a
figure like any other, not a failure: the table says which targets hold.

The benches: engine, workers, dashboards (PostgreSQL), transforms (no database), pages (every UI page as the demo
user, on a temporary SQLite file: the embedded default a newcomer runs).
"""

import subprocess
import sys
import tempfile
import time
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
sys.path.insert(0, str(BENCH_DIR))

from report import print_table, read_json  # noqa: E402  (bench/ is on the path only from here)

NOT_BENCHES = {"run", "report"}
NO_FIGURES = 3  # the probe's exit status for a module without figures()

# Imports the module at argv[1] as its own script would be (bench/ and the project on the path) and answers by
# its exit status whether it has figures().
PROBE = f"""
import importlib.util, sys
sys.path[:0] = [{str(BENCH_DIR)!r}, {str(ROOT)!r}]
spec = importlib.util.spec_from_file_location("bench_probe", sys.argv[1])
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
sys.exit(0 if callable(getattr(module, "figures", None)) else {NO_FIGURES})
"""


def benches(names):
    found = sorted(path for path in BENCH_DIR.glob("*.py") if path.stem not in NOT_BENCHES
                   and not path.stem.startswith("_"))
    if names:
        unknown = set(names) - {path.stem for path in found}
        if unknown:
            raise SystemExit(f"no bench named {', '.join(sorted(unknown))} in {BENCH_DIR}")
        found = [path for path in found if path.stem in names]
    return found


def run_one(path, out_dir):
    """(figures, problem): the bench's figures, or None and why (skipped or crashed; crashed when crashed)."""
    probe = subprocess.run([sys.executable, "-c", PROBE, str(path)], cwd=ROOT, capture_output=True, text=True)
    if probe.returncode == NO_FIGURES:
        return None, ("skipped", "it has no figures() yet")
    if probe.returncode != 0:
        last = (probe.stderr.strip().splitlines() or ["(no output)"])[-1]
        return None, ("crashed", f"it does not import: {last}")
    out = Path(out_dir) / f"{path.stem}.json"
    # Its output goes straight to ours: a long bench shows its progress as it goes.
    process = subprocess.run([sys.executable, str(path), "--json", str(out)], cwd=ROOT)
    if process.returncode != 0:
        return None, ("crashed", f"it exited with status {process.returncode}")
    if not out.exists():
        return None, ("crashed", "it wrote no figures")
    return read_json(out), None


def main(argv=None):
    names = sys.argv[1:] if argv is None else argv
    figures, notes, crashed = [], [], False
    with tempfile.TemporaryDirectory(prefix="resync-bench-") as out_dir:
        for path in benches(names):
            print(f"== bench/{path.name}", flush=True)
            started = time.monotonic()
            found, problem = run_one(path, out_dir)
            minutes = (time.monotonic() - started) / 60
            if problem is not None:
                kind, why = problem
                crashed = crashed or kind == "crashed"
                notes.append(f"bench/{path.name} {kind}: {why}")
                print(f"== bench/{path.name} {kind}: {why}", flush=True)
                continue
            figures += found
            print(f"== bench/{path.name}: {len(found)} figures in {minutes:.1f} min", flush=True)
    print()
    print_table(figures)
    for note in notes:
        print(note)
    return 1 if crashed else 0


if __name__ == "__main__":
    sys.exit(main())
