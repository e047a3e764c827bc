"""What a run was asked to do: its inputs, typed. Stored as SyncRun.options (JSON); the run's state and outputs
live in fields of their own (cursors, counts, the test run's plan)."""

import dataclasses

from syncs.models import Resolution


@dataclasses.dataclass(frozen=True)
class RunOptions:
    """The inputs of one run.

    A run reads the delta since the mapping's cursor unless it names what to process instead: failed `batches`
    fetched again by their page token, record `errors` replayed, or source `records` re-synced.
    """

    full: bool = False  # read everything, not the delta since the cursor
    page_size: int | None = None  # records per page (default: the mapping's batch size)
    sample_size: int | None = None  # a test sync's sample: stop after this many records
    errors: tuple[int, ...] = ()  # record and batch errors this run retries
    batches: tuple[int, ...] = ()  # failed batches this run fetches again
    records: tuple[str, ...] = ()  # source record ids this run re-syncs
    resolution: str = ""  # how the errors this run resolves are marked (Resolution)
    force: bool = False  # overwrite a target record that changed after the failure
    claim_token: str = ""  # the claim under which this run holds the errors it retries
    claim_on_start: bool = False  # claim them when it starts (it was queued behind another run)
    preview: bool = False  # a replay's preview: a test run over the named errors as they are

    def __post_init__(self):
        if self.resolution and self.resolution not in Resolution.values:
            raise ValueError(f"Not a resolution: {self.resolution!r}")

    @classmethod
    def from_dict(cls, data):
        data = dict(data or {})
        unknown = set(data) - {field.name for field in dataclasses.fields(cls)}
        if unknown:
            raise TypeError(f"Not a run option: {', '.join(sorted(unknown))}")
        for name in ("errors", "batches", "records"):
            if name in data:
                data[name] = tuple(data[name] or ())
        for name in ("page_size", "sample_size"):
            if data.get(name) is not None:
                data[name] = int(data[name])
        return cls(**data)

    @classmethod
    def of(cls, run):
        return cls.from_dict(run.options)

    def as_dict(self):
        """The options that differ from the defaults, as JSON."""
        defaults = RunOptions()
        out = {}
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if value != getattr(defaults, field.name):
                out[field.name] = list(value) if isinstance(value, tuple) else value
        return out

    @property
    def replay(self):
        """Whether the run processes named batches, errors or records instead of the cursor's delta."""
        return bool(self.errors or self.batches or self.records)
