"""Forms of the record status page: the API's record status filters with a browser's widgets (plus a search by
record id), and the inputs of its re-sync actions."""

import uuid

from django import forms
from django_filters import CharFilter

from integrations.models import Connection
from mappings.models import Mapping
from syncs.filtersets import RecordStatusFilterSet
from syncs.forms import BrowserFilters


class RecordStatusFilters(BrowserFilters, RecordStatusFilterSet):
    """Which source records the table shows: those with a link matching every filter at once, so "failed" with a
    target is "failed in that target" ("POS sync failed")."""

    search = CharFilter(field_name="source_record_id", lookup_expr="icontains", label="Record id",
                        help_text="Part of a source record's id.")

    def __init__(self, data=None, *args, request=None, **kwargs):
        super().__init__(data, *args, request=request, **kwargs)
        mappings = Mapping.objects.for_org(request.org).order_by("name", "pk").values_list("code", "name")
        targets = (Connection.objects.for_org(request.org).filter(target_mappings__isnull=False).distinct()
                   .order_by("name", "pk").values_list("code", "name"))
        self.filters["mapping"].extra["widget"] = forms.Select(
            choices=[("", "Any mapping"), *((str(code), name) for code, name in mappings)])
        self.filters["target_connection"].extra["widget"] = forms.Select(
            choices=[("", "Any target"), *((str(code), name) for code, name in targets)])
        self.filters["target_connection"].label = "Target"
        self.filters["status"].extra["widget"] = forms.CheckboxSelectMultiple
        self.filters["search"].extra["widget"] = forms.TextInput(
            attrs={"type": "search", "placeholder": "e.g. cus_1042"})
        for filter_ in self.filters.values():
            # The API's help texts document its parameters; the bar's labels say enough, and a help text the bar
            # does not show would leave its input described by an element that is not on the page.
            filter_.extra.pop("help_text", None)

    @property
    def is_filtered(self):
        return any(value.strip() for name in self.filters for value in self.data.getlist(name))


class MappingIdsField(forms.Field):
    """Ids of mappings (UUIDs); whether they are the organization's is the view's question."""

    widget = forms.MultipleHiddenInput

    def to_python(self, value):
        values = value if isinstance(value, list | tuple) else ([value] if value else [])
        try:
            return list(dict.fromkeys(uuid.UUID(str(item)) for item in values))
        except ValueError:
            raise forms.ValidationError("A mapping id is not valid.", code="invalid") from None


class ResyncRowForm(forms.Form):
    """One source record, re-synced in each mapping named (the mappings of its row)."""

    record = forms.CharField(max_length=255)
    mapping = MappingIdsField()


class ResyncUnsyncedForm(forms.Form):
    """The scope of "Re-sync all unsynced": one mapping, one target, or everything (records_resync_unsynced)."""

    mapping = forms.ModelChoiceField(queryset=Mapping.objects.none(), required=False, to_field_name="code")
    target_connection = forms.ModelChoiceField(queryset=Connection.objects.none(), required=False,
                                               to_field_name="code")

    def __init__(self, data=None, *, organization):
        super().__init__(data)
        self.fields["mapping"].queryset = Mapping.objects.for_org(organization)
        self.fields["target_connection"].queryset = Connection.objects.for_org(organization)
