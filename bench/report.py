"""The shape every bench reports in: a list of Figure, printed as one table, passed between processes as JSON.

A bench module exposes `figures(argv=None) -> list[Figure]`; its `main()` prints `print_table` of its own figures
and, given `--json OUT`, writes them there with `write_json` (bench/run.py reads them back with `read_json` and
prints every bench's figures in one table). Nothing here measures anything.
"""

import dataclasses
import json
import math
from pathlib import Path

COLUMNS = ("bench", "measure", "value", "baseline", "ratio", "target", "holds")


@dataclasses.dataclass
class Figure:
    """One measured value, and how it compares with its baseline and its target.

    `ratio` is value / the baseline's value (None without a baseline); `target` says in words what must hold
    (e.g. "ratio ≥ 0.70", "≤ 300 MB"), `holds` whether it does (None: no target, a figure for information).
    """

    bench: str
    measure: str
    value: float
    unit: str
    baseline: str = ""
    ratio: float | None = None
    target: str = ""
    holds: bool | None = None

    def as_dict(self):
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data):
        names = {field.name for field in dataclasses.fields(cls)}
        return cls(**{key: value for key, value in data.items() if key in names})


def format_value(value, unit):
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if abs(value) >= 100 or float(value).is_integer():
        text = f"{value:,.0f}"
    elif abs(value) >= 10:
        text = f"{value:.1f}"
    else:
        text = f"{value:.2f}"
    return f"{text} {unit}".strip()


def rows_of(figures):
    rows = []
    for figure in figures:
        holds = {True: "yes", False: "NO", None: ""}[figure.holds]
        ratio = "" if figure.ratio is None else f"{figure.ratio:.2f}x"
        rows.append((figure.bench, figure.measure, format_value(figure.value, figure.unit), figure.baseline, ratio,
                     figure.target, holds))
    return rows


def print_table(figures, *, file=None):
    """One plain-text table: a line per figure, columns as wide as their widest cell."""
    rows = [COLUMNS, *rows_of(figures)]
    widths = [max(len(row[column]) for row in rows) for column in range(len(COLUMNS))]
    # Numbers read best aligned on the right, words on the left.
    right = {2, 4}
    lines = []
    for number, row in enumerate(rows):
        cells = [cell.rjust(width) if column in right else cell.ljust(width)
                 for column, (cell, width) in enumerate(zip(row, widths, strict=True))]
        lines.append("  ".join(cells).rstrip())
        if number == 0:
            lines.append("  ".join("-" * width for width in widths))
    print("\n".join(lines), file=file, flush=True)


def write_json(figures, path):
    Path(path).write_text(json.dumps([figure.as_dict() for figure in figures], indent=2) + "\n")


def read_json(path):
    return [Figure.from_dict(item) for item in json.loads(Path(path).read_text())]
