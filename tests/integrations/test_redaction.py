"""Scrubbing secrets out of snapshots, technical details and log lines."""

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

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


# --- properties: any depth, any case -----------------------------------------------------------------------------

SECRET_WORDS = ["password", "passwd", "secret", "token", "api_key", "api-key", "apikey", "auth", "credential",
                "private_key", "bearer", "session", "cookie", "signature", "client_secret", "access_token"]


def _any_case(word):
    return st.lists(st.booleans(), min_size=len(word), max_size=len(word)).map(
        lambda upper: "".join(c.upper() if u else c.lower() for c, u in zip(word, upper, strict=True)))


# A secret-looking key: one of the words in any case, with anything around it ("X-Auth-Token", "myApiKey2").
secret_keys = st.builds(lambda before, word, after: before + word + after,
                        st.sampled_from(["", "x-", "my", "stripe_", "Hub"]),
                        st.sampled_from(SECRET_WORDS).flatmap(_any_case),
                        st.sampled_from(["", "_id", "2", "-value", "Hash"]))
PLAIN_KEYS = ["email", "city", "sku", "name", "amount", "items", "id", "notes"]
plain_keys = st.sampled_from(PLAIN_KEYS)


@st.composite
def documents(draw, depth=0):
    """A JSON-like document with secrets (unique canary values under secret-looking keys) at any depth."""
    if depth >= 4 or draw(st.booleans()):
        return draw(st.one_of(st.integers(), st.booleans(), st.none(), st.sampled_from(["Napier", "A1", ""])))
    if draw(st.booleans()):
        return [draw(documents(depth=depth + 1)) for _ in range(draw(st.integers(0, 3)))]
    document = {}
    for _ in range(draw(st.integers(0, 4))):
        if draw(st.booleans()):
            canary = f"canary-{draw(st.uuids()).hex}"
            # The secret itself may be a plain value or a whole structure (e.g. "credentials": {...}).
            document[draw(secret_keys)] = draw(st.sampled_from([canary, {"value": canary}, [canary]]))
        else:
            document[draw(plain_keys)] = draw(documents(depth=depth + 1))
    return document


def _without_secrets(value):
    """What scrub must keep: the document with each secret-keyed value replaced, nothing else changed."""
    if isinstance(value, dict):
        return {key: _without_secrets(item) if key in PLAIN_KEYS else REDACTED for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_without_secrets(item) for item in value]
    return value


@settings(max_examples=300, deadline=None)
@given(documents())
def test_no_value_under_a_secret_looking_key_survives_at_any_depth_or_case(document):
    scrubbed = scrub(document)

    assert "canary-" not in json.dumps(scrubbed)
    assert scrubbed == _without_secrets(document)  # and nothing else was touched


@settings(max_examples=200, deadline=None)
@given(st.text(min_size=4, max_size=40).filter(lambda secret: secret not in REDACTED), st.text(max_size=60),
       st.text(max_size=60))
def test_a_known_secret_is_removed_from_any_text_around_it(secret, before, after):
    # The marker is taken out before looking, so a secret cannot hide in "[redacted]" next to it.
    assert secret not in scrub_text(before + secret + after, secrets=[secret]).replace(REDACTED, "\0")
