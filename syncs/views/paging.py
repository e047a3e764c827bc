"""Keyset pages for the long, growing lists (runs, errors), newest first, like the API's cursor pagination.

A page costs one query on the list's newest-first index whatever the table holds: no OFFSET, and no COUNT(*)
of the whole set (`count_up_to` counts at most a bound). The cursor is an opaque token naming the row a page
starts after (older rows) or before (newer rows); a cursor that does not decode is simply the first page.
"""

import base64
import binascii
import datetime
import json
from dataclasses import dataclass

from django.db.models import Q

PAGE_SIZE = 50
COUNT_BOUND = 1000


@dataclass
class KeysetPage:
    rows: list
    older: str | None  # the cursor of the next page (older rows), None on the last one
    newer: str | None  # the cursor of the previous page (newer rows), None on the first one


def _encode(value, pk):
    return base64.urlsafe_b64encode(json.dumps([value.isoformat(), pk]).encode()).decode().rstrip("=")


def _decode(cursor):
    try:
        value, pk = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        moment = datetime.datetime.fromisoformat(value)
    except (binascii.Error, ValueError, TypeError, UnicodeDecodeError):
        return None
    if not isinstance(pk, int) or moment.tzinfo is None:
        return None
    return moment, pk


def keyset_page(queryset, *, field, after=None, before=None, size=PAGE_SIZE):
    """One page of `queryset` ordered by (-field, -pk): the rows after the cursor `after` (older), or before
    the cursor `before` (newer), or the newest ones."""
    position = _decode(after or before or "")
    newest_first = queryset.order_by(f"-{field}", "-pk")
    if position is None:
        rows = list(newest_first[:size + 1])
        more_older, more_newer = len(rows) > size, False
        rows = rows[:size]
    elif after:
        moment, pk = position
        rows = list(newest_first.filter(Q(**{f"{field}__lt": moment}) | Q(**{field: moment, "pk__lt": pk}))
                    [:size + 1])
        more_older, more_newer = len(rows) > size, True
        rows = rows[:size]
    else:
        moment, pk = position
        rows = list(queryset.order_by(field, "pk")
                    .filter(Q(**{f"{field}__gt": moment}) | Q(**{field: moment, "pk__gt": pk}))[:size + 1])
        more_older, more_newer = True, len(rows) > size
        rows = rows[:size][::-1]
    older = _encode(getattr(rows[-1], field), rows[-1].pk) if rows and more_older else None
    newer = _encode(getattr(rows[0], field), rows[0].pk) if rows and more_newer else None
    return KeysetPage(rows=rows, older=older, newer=newer)


def count_up_to(queryset, bound=COUNT_BOUND):
    """How many rows match, counted no further than `bound` + 1: a number to show, never a full scan."""
    return queryset.order_by()[:bound + 1].count()
