"""Browser views of syncs, one module per page family: the overview (overview.py), sync runs (runs.py) and the
errors dashboard (errors.py); keyset pages for their long lists in paging.py. Views stay thin: they read through
`for_org`, the API's filtersets and selectors, and act through the same services the REST API calls."""

from syncs.views.overview import home, runs_in_progress

__all__ = ["home", "runs_in_progress"]
