"""Retry policy: which errors are retried automatically, how often and when.

The one source of retryability is the error table of integrations.errors (CATEGORY_DEFAULTS); a mapping may
override it per category (`Mapping.retry_policy`). Every automatic path (the retry sweeper, automated replay)
and every verdict on a new error (`error_routing`) reads the policy from here.
"""

import dataclasses
from datetime import timedelta

from django.core.exceptions import ValidationError

from integrations.errors import CATEGORY_DEFAULTS, ErrorCategory
from mappings.models import ErrorStrategy
from syncs.models import ErrorStatus

# "unknown" (an unexpected 500, an unparseable answer) is retried, but only a few times.
ATTEMPT_CAPS = {ErrorCategory.UNKNOWN: 2}


@dataclasses.dataclass(frozen=True)
class RetryPolicy:
    retry: bool
    attempts: int
    delays: tuple[int, ...]


def retry_policy(mapping, category, *, retryable=None):
    """The mapping's retry policy for one error category: its own override, else the defaults.

    Without an override a category retries when the error itself is retryable (a problem-JSON body can say so,
    else the category's default), with the mapping's schedule and max retries.
    """
    category = ErrorCategory(category)
    override = (mapping.retry_policy or {}).get(str(category)) or {}
    default_retry = CATEGORY_DEFAULTS[category][0]
    retry = override.get("retry", default_retry if retryable is None else retryable)
    attempts = override.get("attempts", min(ATTEMPT_CAPS.get(category, mapping.max_retries), mapping.max_retries))
    delays = tuple(override.get("delays") or mapping.retry_schedule or (60, 300, 1800))
    return RetryPolicy(retry=bool(retry), attempts=int(attempts), delays=tuple(int(d) for d in delays))


def validate_retry_policy(value):
    """Raise ValidationError unless `value` is {category: {"retry": bool, "attempts": int, "delays": [int]}}."""
    if not isinstance(value, dict):
        raise ValidationError("The retry policy must be an object keyed by error category.")
    for category, rule in value.items():
        if category not in ErrorCategory.values:
            raise ValidationError(f"Unknown error category '{category}'.")
        if not isinstance(rule, dict) or set(rule) - {"retry", "attempts", "delays"}:
            raise ValidationError(f"{category}: expected retry, attempts and delays.")
        if "retry" in rule and not isinstance(rule["retry"], bool):
            raise ValidationError(f"{category}: retry must be true or false.")
        if "attempts" in rule and (not isinstance(rule["attempts"], int) or not 0 <= rule["attempts"] <= 20):
            raise ValidationError(f"{category}: attempts must be a whole number from 0 to 20.")
        delays = rule.get("delays", [1])
        if not isinstance(delays, list) or not delays or not all(isinstance(d, int) and d > 0 for d in delays):
            raise ValidationError(f"{category}: delays must be a list of seconds above 0.")


def next_retry_time(policy, *, attempts, now, retry_after_until=None):
    """When the next automatic retry is due after `attempts` retries, or None when there is none left.

    Never sooner than the Retry-After the target asked for.
    """
    if not policy.retry or attempts >= policy.attempts:
        return None
    due = now + timedelta(seconds=policy.delays[min(attempts, len(policy.delays) - 1)])
    if retry_after_until and retry_after_until > due:
        due = retry_after_until
    return due


def error_routing(*, mapping, error, now):
    """Status and next retry time of a new record error, by the mapping's strategy and retry policy."""
    if mapping.error_strategy == ErrorStrategy.MANUAL_REVIEW:
        return ErrorStatus.IN_REVIEW, None
    if mapping.error_strategy != ErrorStrategy.RETRY:
        return ErrorStatus.OPEN, None
    policy = retry_policy(mapping, error.category, retryable=error.retryable)
    if not policy.retry:
        return ErrorStatus.OPEN, None
    due = next_retry_time(policy, attempts=error.attempts, now=now, retry_after_until=error.retry_after_until)
    if due is None:
        return ErrorStatus.EXHAUSTED, None
    return ErrorStatus.RETRY_SCHEDULED, due
