"""Analytics in the browser: the figures of syncs.analytics.analytics_summary (the function the API's
/analytics/ answers with) over a window the user picks, as cards, charts and the tables behind them.

The query count does not depend on the data: analytics_summary runs a fixed number of aggregate queries, and this
view adds one to tell an organization that never synced from a quiet window.
"""

from datetime import UTC, datetime
from urllib.parse import urlencode

from django.shortcuts import render
from django.urls import reverse

from accounts.access import org_required
from integrations.errors import ErrorCategory
from syncs.analytics import analytics_summary
from syncs.api.analytics import WINDOWS
from syncs.forms import FILTERED
from syncs.models import SyncRun

# The API's window names, so a link to the page and a call to the API say the same thing.
WINDOW_LABELS = {"24h": "24 hours", "7d": "7 days", "30d": "30 days"}
DEFAULT_WINDOW = "7d"
TOP_CODES = 10


def _window(request):
    """The chosen window's name; anything else (missing, misspelt, repeated) is the default, never an error."""
    name = request.GET.get("window")
    return name if name in WINDOWS else DEFAULT_WINDOW


def duration_text(seconds):
    """A duration as a person reads it on a card: "45 s", "12 min", "3.5 h", "2.1 days"."""
    if seconds is None:
        return "—"
    if seconds < 60:
        return f"{seconds:.0f} s"
    if seconds < 3600:
        return f"{seconds / 60:.0f} min"
    if seconds < 86400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"


def _trend_table(trend, window):
    """The trend's figures as rows a table can show: per hour for a day, per UTC day for longer windows (a
    month of hours is 720 rows, too many to read)."""
    if window == "24h":
        return [{"start": bucket["hour"], "count": bucket["count"]} for bucket in trend]
    days = {}
    for bucket in trend:
        day = bucket["hour"].astimezone(UTC).date()
        days[day] = days.get(day, 0) + bucket["count"]
    return [{"start": datetime(day.year, day.month, day.day, tzinfo=UTC), "count": count}
            for day, count in days.items()]


def _errors_link(category):
    return f"{reverse('errors')}?{urlencode({FILTERED: '1', 'category': category})}"


def _categories(rows):
    labels = dict(ErrorCategory.choices)
    return [{**row, "label": labels.get(row["category"], row["category"]), "url": _errors_link(row["category"])}
            for row in rows]


def _chart_data(summary, categories):
    """What static/js/analytics.js draws, handed over with json_script: plain numbers and labels only."""
    return {
        "trend": [{"hour": bucket["hour"], "count": bucket["count"]} for bucket in summary["error_trend"]],
        "categories": [{"label": row["label"], "count": row["count"]} for row in categories],
        "targets": [{"label": row["connection"], "rate": row["rate"], "succeeded": row["succeeded"],
                     "failed": row["failed"]} for row in summary["success_rate_per_target"]["targets"]],
    }


@org_required
def analytics(request):
    """Error rate, errors by category and code, resolution time, retry success and success per target over the
    last 24 hours, 7 days or 30 days."""
    org = request.org
    window = _window(request)
    until = datetime.now(UTC)
    since = until - WINDOWS[window]
    summary = analytics_summary(organization=org, since=since, until=until)
    categories = _categories(summary["errors_by_category"])
    trend_total = sum(bucket["count"] for bucket in summary["error_trend"])
    peak = max(summary["error_trend"], key=lambda bucket: bucket["count"], default=None)
    targets = summary["success_rate_per_target"]["targets"]
    has_data = bool(summary["error_rate"]["processed"] or trend_total or categories or targets
                    or summary["resolution_time"]["count"] or summary["retry_success"]["retried"])
    context = {
        "window": window,
        "window_label": WINDOW_LABELS[window],
        "windows": [{"name": name, "label": label, "url": f"?{urlencode({'window': name})}"}
                    for name, label in WINDOW_LABELS.items()],
        "since": since,
        "until": until,
        "has_data": has_data,
        # Only asked when the window is empty: "nothing synced yet" and "a quiet window" need different advice.
        "ever_synced": has_data or SyncRun.objects.for_org(org).filter(is_test=False).exists(),
        "error_rate": summary["error_rate"],
        "retry_success": summary["retry_success"],
        "resolution_time": {**summary["resolution_time"],
                            "median": duration_text(summary["resolution_time"]["median_seconds"]),
                            "p90": duration_text(summary["resolution_time"]["p90_seconds"])},
        "trend_total": trend_total,
        "trend_peak": peak if peak and peak["count"] else None,
        "trend_table": _trend_table(summary["error_trend"], window),
        "trend_by_hour": window == "24h",
        "categories": categories,
        "category_total": sum(row["count"] for row in categories),
        "codes": _categories(summary["errors_by_code"][:TOP_CODES]),
        "code_count": len(summary["errors_by_code"]),
        "targets": targets,
        "overall": summary["success_rate_per_target"]["overall"],
        "unsynced": summary["unsynced_per_target"],
        "chart_data": _chart_data(summary, categories),
    }
    return render(request, "syncs/analytics.html", context)
