"""Scrubbing secrets out of snapshots, technical details and log lines."""

import pytest

from integrations.redaction import REDACTED, scrub, scrub_text


def test_scrub_masks_secret_looking_keys_recursively():
    value = {
        "email": "jane@example.com",
        "password": "hunter2",
        "API-Key": "k-1",
        "nested": {"access_token": "t-1", "Authorization": "Bearer b-1", "city": "Napier"},
        "items": [{"client_secret": "s-1", "sku": "A1"}],
        "session_id": "sess-1",
    }

    scrubbed = scrub(value)

    assert scrubbed == {
        "email": "jane@example.com",
        "password": REDACTED,
        "API-Key": REDACTED,
        "nested": {"access_token": REDACTED, "Authorization": REDACTED, "city": "Napier"},
        "items": [{"client_secret": REDACTED, "sku": "A1"}],
        "session_id": REDACTED,
    }


def test_scrub_leaves_the_original_untouched():
    value = {"token": "t-1", "list": [{"secret": "s"}]}

    scrub(value)

    assert value == {"token": "t-1", "list": [{"secret": "s"}]}


def test_scrub_masks_secrets_inside_string_values():
    assert scrub({"note": "call with api_key=abc123"}) == {"note": f"call with api_key={REDACTED}"}
    assert scrub(["Bearer abc.def"]) == [f"Bearer {REDACTED}"]


@pytest.mark.parametrize("value", [None, 12, 3.5, True])
def test_scrub_passes_other_values_through(value):
    assert scrub(value) is value


@pytest.mark.parametrize(
    ("text", "secret"),
    [
        ("Authorization: Bearer eyJhbGciOi.payload.sig", "eyJhbGciOi.payload.sig"),
        ("GET /v1/contacts?api_key=k-98765&limit=10", "k-98765"),
        ('{"token": "t-55555", "page": 2}', "t-55555"),
        ("password=hunter2; user=jane", "hunter2"),
        ("client_secret: cs-4242", "cs-4242"),
        ("apiKey='ak-777'", "ak-777"),
    ],
)
def test_scrub_text_masks_secret_assignments(text, secret):
    scrubbed = scrub_text(text)

    assert secret not in scrubbed
    assert REDACTED in scrubbed


def test_scrub_text_keeps_ordinary_text():
    assert scrub_text("Contact jane@example.com not found (id 42)") == "Contact jane@example.com not found (id 42)"
    assert scrub_text("limit=10&page=2") == "limit=10&page=2"


def test_scrub_text_removes_known_secret_values_anywhere():
    text = "the target echoed sk-live-canary inside a message: xsk-live-canaryx"

    scrubbed = scrub_text(text, secrets=["sk-live-canary"])

    assert "sk-live-canary" not in scrubbed
    assert scrubbed.count(REDACTED) == 2


def test_scrub_text_ignores_secrets_too_short_to_be_meaningful():
    # Masking "ab" or "" would shred ordinary text without hiding anything worth hiding.
    assert scrub_text("about a table", secrets=["ab", "", None]) == "about a table"
