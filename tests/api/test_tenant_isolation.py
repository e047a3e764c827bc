"""Generated from the URL configuration: every API route and method, called with another organization's token,
a revoked token and no token, against one organization's objects. Every call is 401 or 404 as appropriate, and
nothing in the database changes. A new route is covered the day it is added; a new viewset that does not use
the tenant base class fails here."""

import hashlib
import json
import re

import pytest
from django.apps import apps
from django.urls import URLPattern, URLResolver, reverse
from rest_framework.test import APIClient

from accounts.api import TenantViewSetMixin
from accounts.models import ApiToken
from accounts.services import api_token_revoke
from config import api_urls
from syncs.models import RecordError
from tests.api.world import build_world

pytestmark = pytest.mark.django_db

PUBLIC_VIEWS = {"SpectacularAPIView", "SpectacularSwaggerView", "SpectacularSwaggerSplitView"}
APPS = ("accounts", "integrations", "mappings", "syncs", "notifications")


def api_patterns(patterns=None):
    for pattern in patterns if patterns is not None else api_urls.urlpatterns:
        if isinstance(pattern, URLResolver):
            yield from api_patterns(pattern.url_patterns)
        elif isinstance(pattern, URLPattern) and pattern.name and hasattr(pattern.callback, "cls"):
            yield pattern


def kwarg_names(pattern):
    regex = pattern.pattern.regex
    return set(regex.groupindex)


def routes():
    """(url name, view class, method, kwarg names) for every API operation, format-suffix twins left out."""
    found = []
    for pattern in api_patterns():
        view = pattern.callback.cls
        if view.__name__ in PUBLIC_VIEWS:
            continue
        names = kwarg_names(pattern)
        if "format" in names:
            continue
        actions = getattr(pattern.callback, "actions", None)
        methods = sorted(actions) if actions else sorted(
            m for m in ("get", "post", "put", "patch", "delete") if hasattr(view, m)
        )
        found.extend((pattern.name, view, method, tuple(sorted(names))) for method in methods)
    return found


ROUTES = routes()


def test_every_api_view_uses_the_tenant_base_class():
    views = {view for _name, view, _method, _kwargs in ROUTES}
    assert views, "no API routes found"
    offenders = sorted(view.__name__ for view in views if not issubclass(view, TenantViewSetMixin))
    assert offenders == []


def test_a_viewset_that_overrides_get_queryset_is_refused():
    with pytest.raises(TypeError):
        type("Leaky", (TenantViewSetMixin,), {"get_queryset": lambda self: None})


def snapshot(org):
    """A digest of every row the organization owns (the last-used time of tokens aside: calling with a token
    records its use). Another organization creating rows of its own is not a change to this one."""
    digest = hashlib.sha256()
    for model in apps.get_models():
        if model._meta.app_label not in APPS:
            continue
        fields = [f.attname for f in model._meta.concrete_fields
                  if not (model is ApiToken and f.name == "last_used_at")]
        rows = model.objects.filter(pk=org.pk) if model._meta.label == "accounts.Organization" else (
            model.objects.filter(organization=org) if hasattr(model.objects, "for_org") else model.objects.none())
        rows = list(rows.order_by("pk").values_list(*fields))
        digest.update(json.dumps([model._meta.label, rows], default=str).encode())
    return digest.hexdigest()


@pytest.fixture
def world(org, other_org, make_token):
    mapping = build_world(org)
    build_world(other_org)
    revoked_plain = make_token(org, name="to revoke")
    api_token_revoke(token=ApiToken.objects.for_org(org).get(name="to revoke"))
    return {"mapping": mapping, "other_token": make_token(other_org), "revoked_token": revoked_plain}


def url_kwargs(org, view, names):
    kwargs = {}
    for name in names:
        if name == "code":
            obj = view.tenant_model.objects.for_org(org).order_by("pk").first()
            assert obj is not None, f"the world has no {view.tenant_model.__name__} of the organization"
            kwargs["code"] = obj.code
        elif name == "fingerprint":
            kwargs["fingerprint"] = RecordError.objects.for_org(org).exclude(fingerprint="").first().fingerprint
        elif name == "object_name":
            kwargs["object_name"] = "contacts"
        else:
            raise AssertionError(f"teach this test how to fill the URL argument {name!r}")
    return kwargs


def body_with_foreign_ids(org):
    """A body naming the organization's objects in every field a resource may read ids from."""
    error = RecordError.objects.for_org(org).filter(level="record").first()
    mapping = error.mapping
    return {
        "ids": [str(error.code)],
        "mapping": str(mapping.code),
        "source_connection": str(mapping.source_connection.code),
        "target_connection": str(mapping.target_connection.code),
        "connection": str(mapping.source_connection.code),
        "source_record_ids": [error.source_record_id],
        "name": "intruder",
        "source_object": "contacts",
        "target_object": "contacts",
    }


def call(client, method, url, body):
    return getattr(client, method)(url, data=body if method in ("post", "put", "patch") else None, format="json")


@pytest.mark.parametrize(
    ("name", "view", "method", "names"), ROUTES, ids=[f"{m.upper()} {n}" for n, _v, m, _k in ROUTES]
)
def test_no_other_organization_revoked_token_or_anonymous_caller_reaches_an_organizations_objects(
    world, org, name, view, method, names
):
    url = reverse(name, kwargs=url_kwargs(org, view, names))
    body = body_with_foreign_ids(org)
    org_codes = {re.escape(str(value)) for key, value in body.items() if key in ("ids", "mapping", "connection")}
    before = snapshot(org)

    anonymous = call(APIClient(), method, url, body)
    revoked = APIClient()
    revoked.credentials(HTTP_AUTHORIZATION=f"Bearer {world['revoked_token']}")
    revoked_answer = call(revoked, method, url, body)
    other = APIClient()
    other.credentials(HTTP_AUTHORIZATION=f"Bearer {world['other_token']}")
    other_answer = call(other, method, url, body)

    assert anonymous.status_code == 401, (url, anonymous.content)
    assert revoked_answer.status_code == 401, (url, revoked_answer.content)
    if names:
        assert other_answer.status_code == 404, (url, other_answer.status_code, other_answer.content)
    else:
        # A collection: the other organization sees only its own rows, and ids of ours in a body are unknown.
        assert other_answer.status_code < 500, (url, other_answer.content)
        text = other_answer.content.decode()
        assert not any(re.search(code, text) for code in org_codes), (url, text[:500])
        assert other_answer.status_code not in (200, 201, 202) or method == "get" or name.endswith("-list"), (
            url, other_answer.status_code, text[:500])
    for answer in (anonymous, revoked_answer, other_answer):
        assert answer["Content-Type"].startswith(("application/problem+json", "application/json"))
    assert snapshot(org) == before, f"{method.upper()} {url} changed the database"
