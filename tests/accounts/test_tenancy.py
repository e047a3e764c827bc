"""Tenant isolation: services and querysets of one organization never reach another's rows."""

import pytest
from django.apps import apps
from django.core.exceptions import ValidationError

from accounts.tenancy import TenantModel
from integrations.connectors.sandbox import seed_records
from syncs.models import ErrorLevel, RecordError, RunStatus, SyncRun
from syncs.services import sync_runs_queue_for_org
from tests.syncs.helpers import person, records, run_mapping

pytestmark = pytest.mark.django_db

TENANT_MODELS = [model for model in apps.get_models() if issubclass(model, TenantModel)]


def test_every_tenant_model_is_reached_through_for_org():
    assert {m.__name__ for m in TENANT_MODELS} >= {
        "Connection", "SandboxRecord", "Mapping", "FieldMapping", "SyncRun", "SyncBatch", "RecordError", "RecordLink",
    }
    for model in TENANT_MODELS:
        with pytest.raises(ValueError):
            model.objects.for_org(None)


@pytest.fixture
def two_synced_organizations(org, other_org, make_mapping):
    mappings = {}
    for organization in (org, other_org):
        mapping = make_mapping(organization=organization)
        seed_records(mapping.source_connection, "contacts", [person(1), person(2, last_name="")])
        run_mapping(mapping)
        mappings[organization.pk] = mapping
    return mappings


def test_for_org_returns_only_the_organizations_own_rows(org, other_org, two_synced_organizations):
    for model in TENANT_MODELS:
        mine = model.objects.for_org(org)
        assert not mine.exclude(organization=org).exists(), model.__name__
        if model.objects.exists():
            assert mine.exists() and model.objects.for_org(other_org).exists(), model.__name__


def test_syncing_an_organization_queues_only_its_own_mappings(org, other_org, two_synced_organizations):
    runs = sync_runs_queue_for_org(organization=org, enqueue=False)

    assert [run.mapping for run in runs] == [two_synced_organizations[org.pk]]
    assert {run.organization for run in runs} == {org}


def test_a_mapping_may_not_use_another_organizations_connection(org, other_org, make_connection, make_mapping):
    foreign = make_connection("Globex CRM", organization=other_org)
    mapping = make_mapping()
    mapping.target_connection = foreign

    with pytest.raises(ValidationError) as caught:
        mapping.full_clean()
    assert "target_connection" in caught.value.message_dict


def test_the_engine_refuses_a_crossed_mapping_and_moves_no_data(org, other_org, make_connection, make_mapping):
    foreign = make_connection("Globex CRM", organization=other_org)
    mapping = make_mapping()
    # Saved around validation, as a bug or a raw update could: the worker must still refuse it.
    type(mapping).objects.filter(pk=mapping.pk).update(target_connection=foreign)
    mapping.refresh_from_db()
    seed_records(mapping.source_connection, "contacts", [person(1)])

    run = run_mapping(mapping)

    assert run.status == RunStatus.FAILED
    assert RecordError.objects.get(run=run, level=ErrorLevel.SYSTEM).error_code == "cross_tenant"
    assert records(foreign) == []
    assert SyncRun.objects.for_org(other_org).count() == 0


def test_the_sync_command_refuses_another_organizations_mapping_id(org, other_org, make_mapping):
    from django.core.management import CommandError, call_command

    foreign = make_mapping(organization=other_org)

    with pytest.raises(CommandError, match=f"No mapping with id {foreign.code} in organization 'acme'"):
        call_command("sync", "--org", org.slug, "--mapping", str(foreign.code), "--inline")
    assert not SyncRun.objects.exists()
