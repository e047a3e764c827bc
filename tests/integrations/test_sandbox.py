"""The sandbox: a simulated CRM API that Resync serves itself (integrations.sandbox_api) and reaches over HTTP
(in-process in the tests), whose every answer and failure goes through the real classification."""

import pytest
from django.utils import timezone

from integrations.connectors import get_connector
from integrations.connectors.base import FieldType, WriteAction, WriteOperation
from integrations.connectors.sandbox import SandboxConnector, change_record, reset_call_counter, seed_records
from integrations.errors import ConnectorError, ErrorCategory
from integrations.models import Connection, SandboxCallCounter, SandboxRecord

API_KEY = "sbx-canary-4f1d9a7e"


def make_connection(org, name="Sandbox CRM", faults=None, api_key=API_KEY):
    connection = Connection.objects.create(
        organization=org, name=name, provider="sandbox", config={"faults": faults} if faults else {}
    )
    connection.credentials = {"api_key": api_key} if api_key is not None else {}
    connection.save()
    return connection


@pytest.fixture
def connection(org):
    return make_connection(org)


@pytest.fixture
def sandbox(connection):
    return SandboxConnector(connection)


def contact(email="jane@example.com", **extra):
    return {"email": email, "last_name": "Doe", **extra}


def create(ref, data):
    return WriteOperation(ref=ref, action=WriteAction.CREATE, data=data)


def set_faults(connection, **faults):
    connection.config = {"faults": faults}
    connection.save()
    reset_call_counter(connection)
    return SandboxConnector(connection)


def assert_clean_of_credentials(error):
    assert API_KEY not in error.message
    assert API_KEY not in error.detail


# -- contract basics ---------------------------------------------------------------------------------------------


def test_the_registry_builds_a_sandbox_connector(connection):
    assert isinstance(get_connector(connection), SandboxConnector)


def test_it_describes_contacts_companies_and_deals(sandbox):
    schemas = sandbox.describe()

    assert set(schemas) == {"contacts", "companies", "deals"}
    email = schemas["contacts"].fields["email"]
    assert (email.type, email.required, email.unique, email.max_length) == (FieldType.EMAIL, True, True, 100)
    assert schemas["contacts"].fields["id"].read_only
    assert schemas["companies"].fields["employee_count"].type == FieldType.INTEGER
    assert schemas["deals"].fields["amount"].type == FieldType.NUMBER
    assert {name for name, spec in schemas["deals"].fields.items() if spec.required} == {"title", "amount", "stage"}


def test_an_unknown_object_is_a_mapping_error(sandbox):
    with pytest.raises(ConnectorError) as excinfo:
        sandbox.read_page("tickets")

    assert excinfo.value.category == ErrorCategory.MAPPING


def test_check_passes_with_an_api_key(sandbox):
    sandbox.check()


@pytest.mark.parametrize("api_key", [None, ""])
def test_check_rejects_missing_credentials(org, api_key):
    sandbox = SandboxConnector(make_connection(org, api_key=api_key))

    with pytest.raises(ConnectorError) as excinfo:
        sandbox.check()

    assert (excinfo.value.category, excinfo.value.code) == (ErrorCategory.AUTH, "invalid_api_key")


# -- reading ------------------------------------------------------------------------------------------------------


def test_it_reads_pages_in_modified_order_with_keyset_tokens(connection, sandbox):
    seed_records(connection, "contacts", [contact(f"p{i}@example.com") for i in range(5)], ids=list("abcde"))

    first = sandbox.read_page("contacts", page_size=2)
    second = sandbox.read_page("contacts", page_token=first.next_token, page_size=2)
    last = sandbox.read_page("contacts", page_token=second.next_token, page_size=2)

    assert [r.id for r in first.records] == ["a", "b"]
    assert first.next_token and first.cursor
    assert [r.id for r in second.records] == ["c", "d"]
    assert [r.id for r in last.records] == ["e"]
    assert last.next_token is None
    assert first.records[0].data == contact("p0@example.com")
    assert "id" not in first.records[0].data


def test_a_full_last_page_has_no_next_token(connection, sandbox):
    seed_records(connection, "contacts", [contact(f"p{i}@example.com") for i in range(2)])

    assert sandbox.read_page("contacts", page_size=2).next_token is None


def test_it_reads_only_records_changed_after_the_cursor(connection, sandbox):
    seed_records(connection, "contacts", [contact("old@example.com"), contact("new@example.com")], ids=["old", "new"])
    cursor = sandbox.read_page("contacts").cursor
    change_record(connection, "contacts", "new", {"city": "Wellington"})

    page = sandbox.read_page("contacts", cursor=cursor)

    assert [(r.id, r.data["city"]) for r in page.records] == [("new", "Wellington")]
    assert sandbox.read_page("contacts", cursor=page.cursor).records == []


def test_an_edited_record_moves_to_the_end(connection, sandbox):
    seed_records(connection, "contacts", [contact("a@example.com"), contact("b@example.com")], ids=["a", "b"])

    change_record(connection, "contacts", "a", {"first_name": "Ann"})

    assert [r.id for r in sandbox.read_page("contacts").records] == ["b", "a"]


def test_records_sharing_a_timestamp_across_a_page_and_a_run_boundary_are_all_read(connection, sandbox):
    # One bulk insert: all five share modified_at. A strict "modified after" cursor would skip the ones after
    # the boundary; the keyset (modified_at, sequence) does not.
    seed_records(connection, "contacts", [contact(f"p{i}@example.com") for i in range(5)], ids=list("abcde"))

    first = sandbox.read_page("contacts", page_size=3)
    rest = sandbox.read_page("contacts", cursor=first.cursor, page_size=3)  # the next run, from the cursor

    assert [r.id for r in first.records + rest.records] == list("abcde")
    assert len({r.modified_at for r in first.records + rest.records}) == 1


def test_cursor_paging_cannot_skip_a_page(connection, sandbox):
    assert sandbox.next_page_token("contacts", None, page_size=2) is None


def test_a_garbled_page_token_is_a_validation_error(sandbox):
    with pytest.raises(ConnectorError) as excinfo:
        sandbox.read_page("contacts", page_token="2|cursor:abc")

    assert (excinfo.value.category, excinfo.value.code) == (ErrorCategory.VALIDATION, "INVALID_PAGE_TOKEN")


def test_it_fetches_records_by_id(connection, sandbox):
    seed_records(connection, "companies", [{"name": "Acme"}, {"name": "Globex"}], ids=["co_1", "co_2"])

    found = sandbox.fetch("companies", ["co_2", "co_missing"])

    assert list(found) == ["co_2"]
    assert found["co_2"].data == {"name": "Globex"}


def test_it_finds_records_by_exact_value(connection, sandbox):
    seed_records(
        connection,
        "contacts",
        [contact("jane@example.com"), contact("JANE@example.com"), contact("bob@example.com")],
        ids=["c1", "c2", "c3"],
    )

    found = sandbox.find("contacts", "email", ["jane@example.com", "nobody@example.com"])

    assert [r.id for r in found["jane@example.com"]] == ["c1"]
    assert found["nobody@example.com"] == []
    assert [r.id for r in sandbox.find("contacts", "id", ["c3"])["c3"]] == ["c3"]


def test_find_on_an_unknown_field_is_a_validation_error(sandbox):
    with pytest.raises(ConnectorError) as excinfo:
        sandbox.find("contacts", "shoe_size", ["42"])

    assert (excinfo.value.category, excinfo.value.field) == (ErrorCategory.VALIDATION, "shoe_size")


def test_it_never_reads_another_organizations_records(org, other_org):
    mine = make_connection(org)
    theirs = make_connection(other_org)
    seed_records(theirs, "contacts", [contact("secret@globex.example")], ids=["x1"])
    # A row pointing at my connection but owned by another organization must stay invisible too.
    SandboxRecord.objects.create(
        organization=other_org,
        connection=mine,
        object_name="contacts",
        external_id="x2",
        data=contact("leak@globex.example"),
        modified_at=timezone.now(),
    )
    sandbox = SandboxConnector(mine)

    assert sandbox.read_page("contacts").records == []
    assert sandbox.fetch("contacts", ["x1", "x2"]) == {}
    assert sandbox.find("contacts", "email", ["leak@globex.example"]) == {"leak@globex.example": []}


# -- writing ------------------------------------------------------------------------------------------------------


def test_it_creates_records(connection, sandbox):
    before = timezone.now()

    [result] = sandbox.write("contacts", [create("src-1", contact(phone="+14155550123", first_name="Jane"))])

    assert result.ok and result.ref == "src-1" and result.action == WriteAction.CREATE
    assert result.target_id.startswith("ct_") and len(result.target_id) == 13
    assert result.record == contact(phone="+14155550123", first_name="Jane")
    stored = SandboxRecord.objects.get(connection=connection, external_id=result.target_id)
    assert stored.organization == connection.organization
    assert stored.modified_at >= before


def test_it_updates_records(connection, sandbox):
    [row] = seed_records(connection, "contacts", [contact(city="Auckland")], ids=["c1"])

    [result] = sandbox.write(
        "contacts", [WriteOperation(ref="r", action=WriteAction.UPDATE, target_id="c1", data={"city": "Nelson"})]
    )

    assert (result.ok, result.action, result.target_id) == (True, WriteAction.UPDATE, "c1")
    assert result.record == contact(city="Nelson")
    row.refresh_from_db()
    assert row.data["city"] == "Nelson"


def test_updating_a_missing_record_is_not_found(sandbox):
    [result] = sandbox.write(
        "contacts", [WriteOperation(ref="r", action=WriteAction.UPDATE, target_id="ct_gone", data={"city": "X"})]
    )

    assert not result.ok
    assert result.error.category == ErrorCategory.NOT_FOUND
    assert "ct_gone" in result.error.message


def test_upsert_updates_the_exact_match_or_creates(connection, sandbox):
    seed_records(connection, "contacts", [contact("jane@example.com")], ids=["c1"])

    updated, created = sandbox.write(
        "contacts",
        [
            WriteOperation("a", WriteAction.UPSERT, contact("jane@example.com", city="Napier"), match_field="email"),
            WriteOperation("b", WriteAction.UPSERT, contact("new@example.com"), match_field="email"),
        ],
    )

    assert (updated.action, updated.target_id, updated.record["city"]) == (WriteAction.UPDATE, "c1", "Napier")
    assert created.ok and created.action == WriteAction.CREATE and created.target_id != "c1"


def test_upsert_without_the_match_value_is_a_validation_error(sandbox):
    [result] = sandbox.write(
        "contacts", [WriteOperation("a", WriteAction.UPSERT, {"last_name": "Doe"}, match_field="email")]
    )

    assert (result.error.category, result.error.field) == (ErrorCategory.VALIDATION, "email")


@pytest.mark.parametrize(
    ("object_name", "data", "field", "code"),
    [
        ("contacts", contact(shoe_size=42), "shoe_size", "UNKNOWN_FIELD"),
        ("contacts", contact(id="ct_mine"), "id", "READ_ONLY_FIELD"),
        ("contacts", {"email": "jane@example.com"}, "last_name", "REQUIRED_FIELD_MISSING"),
        ("contacts", contact(last_name="  "), "last_name", "REQUIRED_FIELD_MISSING"),
        ("contacts", contact(first_name="J" * 41), "first_name", "STRING_TOO_LONG"),
        ("contacts", contact(notes="n" * 501), "notes", "STRING_TOO_LONG"),
        ("contacts", contact("not-an-email"), "email", "INVALID_EMAIL"),
        ("contacts", contact("jane@@example.com"), "email", "INVALID_EMAIL"),
        ("contacts", contact(phone="(415) 555-0123"), "phone", "INVALID_PHONE"),
        ("contacts", contact(phone="+0123456789"), "phone", "INVALID_PHONE"),
        ("contacts", contact(city=12), "city", "INVALID_TYPE"),
        ("companies", {"name": "Acme", "employee_count": "12"}, "employee_count", "INVALID_INTEGER"),
        ("companies", {"name": "Acme", "employee_count": 12.5}, "employee_count", "INVALID_INTEGER"),
        ("companies", {"name": "Acme", "employee_count": True}, "employee_count", "INVALID_INTEGER"),
        ("deals", {"title": "Big", "amount": "1,000", "stage": "won"}, "amount", "INVALID_NUMBER"),
        (
            "deals",
            {"title": "Big", "amount": 10, "stage": "won", "close_date": "31/12/2026"},
            "close_date",
            "INVALID_DATE",
        ),
        ("deals", {"title": "Big", "stage": "won"}, "amount", "REQUIRED_FIELD_MISSING"),
    ],
)
def test_it_rejects_invalid_records_like_a_real_api(sandbox, object_name, data, field, code):
    [result] = sandbox.write(object_name, [create("src-1", data)])

    assert not result.ok and result.ref == "src-1"
    assert (result.error.category, result.error.field, result.error.code) == (ErrorCategory.VALIDATION, field, code)
    assert result.error.retryable is False
    assert result.error.detail.startswith("HTTP 400 Bad Request")
    assert not SandboxRecord.objects.exists()


def test_it_accepts_valid_values_of_every_type(sandbox):
    results = sandbox.write(
        "deals",
        [
            create(
                "d", {"title": "Big", "amount": 1200.5, "stage": "won", "close_date": "2026-12-31", "contact_email": ""}
            )
        ],
    ) + sandbox.write("companies", [create("c", {"name": "Acme", "employee_count": 12, "phone": None})])

    assert [r.ok for r in results] == [True, True]


def test_unique_fields_collide_case_insensitively(connection, sandbox):
    seed_records(connection, "contacts", [contact("jane@x.com")], ids=["ct_existing"])

    [result] = sandbox.write("contacts", [create("src-1", contact("Jane@X.com"))])

    error = result.error
    assert (error.category, error.code, error.field) == (ErrorCategory.DUPLICATE, "DUPLICATE_VALUE", "email")
    assert "ct_existing" in error.message
    assert "ct_existing" in error.detail


def test_duplicates_within_one_batch_collide(sandbox):
    first, second = sandbox.write(
        "companies",
        [create("a", {"name": "A", "domain": "acme.com"}), create("b", {"name": "B", "domain": "ACME.com"})],
    )

    assert first.ok
    assert second.error.category == ErrorCategory.DUPLICATE


def test_updating_a_record_to_its_own_unique_value_is_not_a_duplicate(connection, sandbox):
    seed_records(connection, "contacts", [contact("jane@x.com")], ids=["c1"])

    [result] = sandbox.write(
        "contacts", [WriteOperation("r", WriteAction.UPDATE, {"email": "JANE@x.com"}, target_id="c1")]
    )

    assert result.ok


def test_one_bad_record_does_not_fail_the_others(sandbox):
    results = sandbox.write(
        "contacts",
        [create("a", contact("a@example.com")), create("b", contact("bad")), create("c", contact("c@example.com"))],
    )

    assert [r.ok for r in results] == [True, False, True]
    assert [r.ref for r in results] == ["a", "b", "c"]


def test_helpers_insert_messy_data_without_counting_calls(connection):
    [row] = seed_records(connection, "contacts", [{"email": "not an email", "phone": "555 0123"}])
    change_record(connection, "contacts", row.external_id, {"last_name": "x" * 200})

    row.refresh_from_db()
    assert row.data == {"email": "not an email", "phone": "555 0123", "last_name": "x" * 200}
    assert row.external_id.startswith("ct_")
    assert not SandboxCallCounter.objects.filter(connection=connection, calls__gt=0).exists()


# -- injected faults -----------------------------------------------------------------------------------------------


def test_every_call_is_counted(connection, sandbox):
    sandbox.check()
    sandbox.read_page("contacts")
    sandbox.fetch("contacts", ["x"])
    sandbox.find("contacts", "email", ["x"])
    sandbox.write("contacts", [])
    sandbox.describe()

    assert SandboxCallCounter.objects.get(connection=connection).calls == 5


def test_rate_limit_every_nth_call_with_retry_after(connection):
    sandbox = set_faults(connection, rate_limit_every=3, retry_after=12)

    sandbox.read_page("contacts")
    sandbox.read_page("contacts")
    with pytest.raises(ConnectorError) as excinfo:
        sandbox.read_page("contacts")

    error = excinfo.value
    assert (error.category, error.retry_after, error.retryable) == (ErrorCategory.RATE_LIMIT, 12, True)
    assert_clean_of_credentials(error)


def test_rate_limit_defaults_to_30_seconds(connection):
    sandbox = set_faults(connection, rate_limit_every=1)

    with pytest.raises(ConnectorError) as excinfo:
        sandbox.fetch("contacts", ["x"])

    assert excinfo.value.retry_after == 30


@pytest.mark.parametrize(
    ("kind", "category", "code", "retryable"),
    [
        ("503", ErrorCategory.CONNECTION, "http_503", True),
        ("retry_later", ErrorCategory.CONNECTION, "RETRY_LATER", True),
        ("timeout", ErrorCategory.TIMEOUT, "read_timeout", True),
        ("connection", ErrorCategory.CONNECTION, "connection_refused", True),
        ("500", ErrorCategory.UNKNOWN, "http_500", True),
    ],
)
def test_each_failure_kind_is_classified(connection, kind, category, code, retryable):
    sandbox = set_faults(connection, failure_rate=1.0, failure_kind=kind)

    with pytest.raises(ConnectorError) as excinfo:
        sandbox.write("contacts", [create("a", contact())])

    error = excinfo.value
    assert (error.category, error.code, error.retryable) == (category, code, retryable)
    assert_clean_of_credentials(error)
    assert not SandboxRecord.objects.exists()


def test_faults_spare_check_by_default_so_a_run_can_start(connection):
    sandbox = set_faults(connection, failure_rate=1.0, rate_limit_every=1)

    sandbox.check()
    sandbox.describe()
    with pytest.raises(ConnectorError):
        sandbox.read_page("contacts")


def test_faults_apply_only_to_the_listed_operations(connection):
    sandbox = set_faults(connection, failure_rate=1.0, operations=["write"])

    sandbox.read_page("contacts")
    with pytest.raises(ConnectorError):
        sandbox.write("contacts", [])


def test_expired_credentials_fail_every_call_including_check(connection):
    sandbox = set_faults(connection, expired_credentials=True)

    for call in (sandbox.check, lambda: sandbox.read_page("contacts"), lambda: sandbox.write("contacts", [])):
        with pytest.raises(ConnectorError) as excinfo:
            call()
        error = excinfo.value
        assert (error.category, error.code, error.message) == (ErrorCategory.AUTH, "invalid_grant", "Token has expired")
        assert error.retryable is False
        assert_clean_of_credentials(error)


def test_permission_denied_fails_writes_only(connection):
    sandbox = set_faults(connection, permission_denied=True)

    sandbox.read_page("contacts")
    with pytest.raises(ConnectorError) as excinfo:
        sandbox.write("contacts", [create("a", contact())])

    assert (excinfo.value.category, excinfo.value.code) == (ErrorCategory.PERMISSION, "MISSING_SCOPES")


def test_a_failing_page_fails_by_its_number_and_loads_again_by_its_token(connection):
    seed_records(connection, "contacts", [contact(f"p{i}@example.com") for i in range(5)])
    sandbox = set_faults(connection, fail_pages=[2])

    first = sandbox.read_page("contacts", page_size=2)
    with pytest.raises(ConnectorError) as excinfo:
        sandbox.read_page("contacts", page_token=first.next_token, page_size=2)
    set_faults(connection)
    second = sandbox.read_page("contacts", page_token=first.next_token, page_size=2)
    last = sandbox.read_page("contacts", page_token=second.next_token, page_size=2)

    error = excinfo.value
    assert (error.category, error.code, error.retryable) == (ErrorCategory.UNKNOWN, "PAGE_READ_FAILED", True)
    assert error.message == "Page 2 could not be loaded"
    assert len(second.records) == 2
    assert len(last.records) == 1 and last.next_token is None


def _fault_sequence(sandbox, calls=40):
    outcomes = []
    for _ in range(calls):
        try:
            sandbox.fetch("contacts", ["x"])
            outcomes.append("ok")
        except ConnectorError as error:
            outcomes.append(error.category.value)
    return outcomes


def test_the_same_seed_gives_the_same_faults(connection):
    sandbox = set_faults(connection, seed=7, failure_rate=0.3, failure_kind="timeout", rate_limit_every=9)

    first = _fault_sequence(sandbox)
    reset_call_counter(connection)
    second = _fault_sequence(sandbox)

    assert first == second
    assert {"ok", "timeout", "rate_limit"} == set(first)
    assert first[8] == first[17] == "rate_limit"


def test_another_seed_gives_other_faults(connection):
    first = _fault_sequence(set_faults(connection, seed=1, failure_rate=0.5))
    second = _fault_sequence(set_faults(connection, seed=2, failure_rate=0.5))

    assert first != second


def test_record_errors_never_contain_the_credentials(connection, sandbox):
    # A value that happens to contain the API key is echoed by the "API" and must be scrubbed on the way in.
    leaky_email = f"{API_KEY}@example.com"
    seed_records(connection, "contacts", [contact(leaky_email)])

    results = sandbox.write(
        "contacts",
        [create("a", contact(leaky_email)), create("b", contact(API_KEY)), create("c", contact(notes=API_KEY * 30))],
    )

    assert [r.error.category for r in results] == [
        ErrorCategory.DUPLICATE,
        ErrorCategory.VALIDATION,
        ErrorCategory.VALIDATION,
    ]
    assert "[redacted]" in results[0].error.message
    for result in results:
        assert_clean_of_credentials(result.error)


@pytest.mark.parametrize(
    "faults",
    [{"operations": 5}, {"failure_rate": 2}, {"failure_kind": "gremlins"}, {"rate_limit_every": "3"}, {"bogus": 1},
     "all of them"],
)
def test_malformed_fault_settings_are_a_classified_error_not_a_crash(org, faults):
    from integrations.connectors.sandbox import SandboxConnector
    from integrations.errors import ConnectorError
    from integrations.models import Connection

    connection = Connection(organization=org, name="Odd", provider="sandbox", config={"faults": faults})
    connection.credentials = {"api_key": "k"}
    connection.save()

    assert SandboxConnector.validate_config(connection.config)
    with pytest.raises(ConnectorError) as caught:
        SandboxConnector(connection).read_page("contacts")
    assert caught.value.code == "invalid_config"


# -- over the network --------------------------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_over_loopback_its_answers_are_real_http_answers(org, live_server, settings):
    # What `make run` does: the worker calls the web server's sandbox API over a socket.
    settings.RESYNC_SANDBOX_IN_PROCESS = False
    settings.RESYNC_SANDBOX_URL = live_server.url
    connection = make_connection(org, faults={"operations": ["write"], "fail_calls": [3], "failure_kind": "timeout"})
    connection.config = {**connection.config, "timeout_seconds": 1}
    connection.save()
    sandbox = SandboxConnector(connection)
    seed_records(connection, "contacts", [contact("a@example.com")])

    sandbox.check()  # call 1
    assert [r.data["email"] for r in sandbox.read_page("contacts").records] == ["a@example.com"]  # call 2
    with pytest.raises(ConnectorError) as excinfo:  # call 3: the server answers after the client gave up
        sandbox.write("contacts", [create("x", contact("b@example.com"))])

    assert (excinfo.value.category, excinfo.value.code) == (ErrorCategory.TIMEOUT, "read_timeout")
    assert excinfo.value.may_have_applied


def test_in_request_retries_heal_a_transient_answer(connection, settings):
    # A GET may be sent again; a 503 on the first try and the second try answers.
    settings.RESYNC_HTTP_RETRY_DELAYS = [0]
    sandbox = set_faults(connection, fail_calls=[1], failure_kind="503", operations=["read_page"])
    seed_records(connection, "contacts", [contact("a@example.com")])

    assert len(sandbox.read_page("contacts").records) == 1
    assert SandboxCallCounter.objects.get(connection=connection).calls == 2


def test_a_create_is_not_sent_again_after_an_answer_that_may_have_been_carried_out(connection, settings):
    settings.RESYNC_HTTP_RETRY_DELAYS = [0, 0]
    sandbox = set_faults(connection, fail_calls=[1], failure_kind="lost_answer", operations=["write"])

    with pytest.raises(ConnectorError) as excinfo:
        sandbox.write("contacts", [create("x", contact("b@example.com"))])

    assert excinfo.value.category == ErrorCategory.TIMEOUT
    assert SandboxCallCounter.objects.get(connection=connection).calls == 1  # not re-sent
    assert SandboxRecord.objects.filter(connection=connection).count() == 1  # it was carried out
