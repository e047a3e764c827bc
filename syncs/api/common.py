"""Pieces the syncs resources share: short references to related objects, and service refusals as 409s."""

import contextlib

from django.core.exceptions import ValidationError as DjangoValidationError
from rest_framework import exceptions, serializers

from config.api import RejectUnknownFieldsMixin
from integrations.models import Connection
from syncs.models import SyncRun


class MappingRefSerializer(serializers.Serializer):
    id = serializers.UUIDField(source="code", read_only=True)
    name = serializers.CharField(read_only=True)


class ConnectionRefSerializer(serializers.Serializer):
    id = serializers.UUIDField(source="code", read_only=True)
    name = serializers.CharField(read_only=True)


class StateConflict(exceptions.APIException):
    status_code = 409
    default_detail = "This cannot be done in the object's current state."
    default_code = "conflict"


@contextlib.contextmanager
def refusals_as_conflicts():
    """A service's single-message refusal ("already resolved", "nothing to retry") is a 409 with its code;
    field-keyed validation errors stay 400s for the problem handler."""
    try:
        yield
    except DjangoValidationError as exc:
        if hasattr(exc, "error_dict"):
            raise
        raise StateConflict(detail=exc.messages[0], code=getattr(exc, "code", None) or "conflict") from None


def run_codes(run_ids, *, organization):
    """The public ids of the organization's runs a service answered by primary key, in the same order."""
    codes = dict(SyncRun.objects.for_org(organization).filter(pk__in=run_ids).values_list("pk", "code"))
    return [codes[run_id] for run_id in run_ids]


class RetrySummarySerializer(serializers.Serializer):
    """What a retry queued: how many errors, in which runs, and how many were left out and why."""

    queued = serializers.IntegerField(read_only=True)
    runs = serializers.ListField(child=serializers.UUIDField(), read_only=True, help_text="Ids of the replay runs.")
    skipped = serializers.DictField(
        child=serializers.IntegerField(), read_only=True,
        help_text="Errors left out, by reason: test_run, not_retriable, already_resolved, already_retrying, "
                  "no_snapshot.",
    )

    @classmethod
    def answer(cls, summary, *, organization, **extra):
        """The answer to a retry service's summary (which names runs by primary key)."""
        return cls({**summary, "runs": run_codes(summary["runs"], organization=organization), **extra}).data


class ForceSerializer(RejectUnknownFieldsMixin, serializers.Serializer):
    force = serializers.BooleanField(
        default=False, help_text="Overwrite a target record that changed after the failure."
    )


def with_connections(rows, *, organization):
    """Rows a service keyed by connection primary key, with the connection's public reference instead."""
    connections = Connection.objects.for_org(organization).in_bulk({row["connection_id"] for row in rows})
    return [{**row, "connection": connections[row["connection_id"]]} for row in rows]
