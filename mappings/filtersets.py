"""Query filters of the mappings list (django-filter). Connections are named by their public code."""

import django_filters

from mappings.models import Direction, ErrorStrategy, Mapping, ScheduleType, WriteMode


class MappingFilterSet(django_filters.FilterSet):
    source_connection = django_filters.UUIDFilter(
        field_name="source_connection__code", label="Mappings reading from this connection (its id)."
    )
    target_connection = django_filters.UUIDFilter(
        field_name="target_connection__code", label="Mappings writing to this connection (its id)."
    )
    is_active = django_filters.BooleanFilter(label="Active (true) or paused (false).")
    error_strategy = django_filters.ChoiceFilter(choices=ErrorStrategy.choices)
    direction = django_filters.ChoiceFilter(choices=Direction.choices)
    write_mode = django_filters.ChoiceFilter(choices=WriteMode.choices)
    schedule_type = django_filters.ChoiceFilter(choices=ScheduleType.choices)

    class Meta:
        model = Mapping
        fields = [
            "source_connection", "target_connection", "is_active", "error_strategy", "direction", "write_mode",
            "schedule_type",
        ]
