"""Keyset pages for the long, growing lists (runs, errors newest first; the review queue oldest first), like the
API's cursor pagination.

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
    older: str | None  # the cursor of the next page in the list's order (older rows newest first), None at the end
    newer: str | None  # the cursor of the previous page, None on the first one


def cursor_encode(*values):
    """An opaque, URL-safe cursor holding JSON values (a row's sort key)."""
    return base64.urlsafe_b64encode(json.dumps(list(values)).encode()).decode().rstrip("=")


def cursor_decode(cursor):
    """The list of values a cursor holds, or None when it does not decode (a user may type anything)."""
    try:
        values = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (binascii.Error, ValueError, TypeError, UnicodeDecodeError):
        return None
    return values if isinstance(values, list) else None


def _encode(value, pk):
    return cursor_encode(value.isoformat(), pk)


def _decode(cursor):
    values = cursor_decode(cursor)
    if not values or len(values) != 2 or not isinstance(values[1], int) or not isinstance(values[0], str):
        return None
    try:
        moment = datetime.datetime.fromisoformat(values[0])
    except ValueError:
        return None
    return (moment, values[1]) if moment.tzinfo is not None else None


def keyset_page(queryset, *, field, after=None, before=None, size=PAGE_SIZE, newest_first=True):
    """One page of `queryset` ordered by (field, pk), newest first unless `newest_first` is off (a queue is
    worked from its head): the rows after the cursor `after` (further along that order), or before the cursor
    `before` (back towards its start), or the first ones."""
    position = _decode(after or before or "")
    ahead, back = ("lt", "gt") if newest_first else ("gt", "lt")
    sign, reverse_sign = ("-", "") if newest_first else ("", "-")
    in_order = queryset.order_by(f"{sign}{field}", f"{sign}pk")
    if position is None:
        rows = list(in_order[:size + 1])
        more_ahead, more_back = len(rows) > size, False
        rows = rows[:size]
    elif after:
        moment, pk = position
        rows = list(in_order.filter(Q(**{f"{field}__{ahead}": moment}) | Q(**{field: moment, f"pk__{ahead}": pk}))
                    [:size + 1])
        more_ahead, more_back = len(rows) > size, True
        rows = rows[:size]
    else:
        moment, pk = position
        rows = list(queryset.order_by(f"{reverse_sign}{field}", f"{reverse_sign}pk")
                    .filter(Q(**{f"{field}__{back}": moment}) | Q(**{field: moment, f"pk__{back}": pk}))[:size + 1])
        more_ahead, more_back = True, len(rows) > size
        rows = rows[:size][::-1]
    older = _encode(getattr(rows[-1], field), rows[-1].pk) if rows and more_ahead else None
    newer = _encode(getattr(rows[0], field), rows[0].pk) if rows and more_back else None
    return KeysetPage(rows=rows, older=older, newer=newer)


def count_up_to(queryset, bound=COUNT_BOUND):
    """How many rows match, counted no further than `bound` + 1: a number to show, never a full scan."""
    return queryset.order_by()[:bound + 1].count()
