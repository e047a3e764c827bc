"""The API's tenant chokepoint: the base viewset every resource inherits, references by code inside the
caller's organization, idempotency keys, and the token resource. Authentication is in accounts.authentication."""

import hashlib
import json

import django_filters
from django.core.exceptions import ValidationError as DjangoValidationError
from django.core.serializers.json import DjangoJSONEncoder
from django.db import IntegrityError, transaction
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import exceptions, mixins, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.response import Response

from accounts.authentication import IsOrganizationMember, resolve_organization
from accounts.models import ApiToken, IdempotencyRecord, Role, TokenRole
from accounts.services import api_token_create, api_token_revoke
from config.api import RejectUnknownFieldsMixin


class BearerTokenScheme(OpenApiAuthenticationExtension):
    target_class = "accounts.authentication.ApiTokenAuthentication"
    name = "bearerAuth"

    def get_security_definition(self, auto_schema):
        return {"type": "http", "scheme": "bearer", "description": "An organization API token (rsk_…)."}


class TenantViewSetMixin:
    """The one base of every API resource: all querysets start from `tenant_model.objects.for_org(request.org)`.

    Subclasses narrow the queryset in `scope_queryset`, never by overriding get_queryset (refused at class
    creation), so no resource can forget the organization.
    """

    tenant_model = None
    permission_classes = [IsOrganizationMember]
    lookup_field = "code"
    lookup_value_converter = "uuid"

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if "get_queryset" in cls.__dict__:
            raise TypeError(f"{cls.__name__} overrides get_queryset; override scope_queryset instead")

    def initial(self, request, *args, **kwargs):
        super().initial(request, *args, **kwargs)
        # A parameter given twice where one value is read would silently use the last: refused instead, as the
        # schema says (only the filters that take several values are lists there).
        repeated = sorted(name for name in request.query_params
                          if len(request.query_params.getlist(name)) > 1 and name not in self.list_parameters())
        if repeated:
            raise exceptions.ValidationError({name: ["Give this parameter once."] for name in repeated})

    def list_parameters(self):
        """The query parameters that take several values: the filterset's multiple-choice filters."""
        filterset_class = getattr(self, "filterset_class", None)
        if filterset_class is None:
            return set()
        return {name for name, filter_ in filterset_class.base_filters.items()
                if isinstance(filter_, django_filters.MultipleChoiceFilter)}

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):
            return self.tenant_model.objects.none()
        return self.scope_queryset(self.tenant_model.objects.for_org(self.request.org))

    def scope_queryset(self, queryset):
        return queryset

    def perform_create(self, serializer):
        serializer.save(organization=self.request.org)


class TenantRelatedField(serializers.SlugRelatedField):
    """A reference in a request body, by public code, resolved inside the caller's organization only.

    Another organization's code answers 404 exactly like a code that does not exist.
    """

    def __init__(self, model, **kwargs):
        self.model = model
        kwargs.setdefault("slug_field", "code")
        if not kwargs.get("read_only"):
            kwargs.setdefault("queryset", model.objects.none())
        super().__init__(**kwargs)

    def get_queryset(self):
        request = self.context["request"]
        return self.model.objects.for_org(resolve_organization(request))

    def to_internal_value(self, data):
        try:
            return self.get_queryset().get(**{self.slug_field: str(data)})
        # A code that is not even a UUID is as absent as one that belongs to nobody.
        except (self.model.DoesNotExist, DjangoValidationError, ValueError, TypeError):
            # The id is not echoed: the answer must be the same for a foreign id and for junk.
            raise exceptions.NotFound(f"No {self.model._meta.verbose_name} with this id.") from None


IDEMPOTENCY_HEADER = OpenApiParameter(
    "Idempotency-Key", str, OpenApiParameter.HEADER, required=False,
    description="Repeat a POST safely: a repeated key returns the first answer; the same key with another body "
                "is refused (422).",
)


def idempotent(handler):
    """Decorator for POST actions: the first answer to an Idempotency-Key is stored and replayed."""

    def wrapper(self, request, *args, **kwargs):
        key = request.META.get("HTTP_IDEMPOTENCY_KEY", "").strip()
        if not key:
            return handler(self, request, *args, **kwargs)
        if len(key) > 255:
            raise exceptions.ValidationError({"Idempotency-Key": ["At most 255 characters."]})
        org = resolve_organization(request)
        body = json.dumps(request.data, sort_keys=True, default=str) if request.data else ""
        fingerprint = hashlib.sha256(f"{request.method} {request.path}\n{body}".encode()).hexdigest()
        try:
            with transaction.atomic():
                record = IdempotencyRecord.objects.create(organization=org, key=key, fingerprint=fingerprint)
        except IntegrityError:
            record = IdempotencyRecord.objects.for_org(org).get(key=key)
            if record.fingerprint != fingerprint:
                raise IdempotencyMismatch() from None
            if record.status_code is None:
                raise exceptions.APIException(
                    "A request with this Idempotency-Key is still being processed.", code="idempotency_in_progress"
                ) from None
            response = Response(record.response, status=record.status_code)
            response["Idempotent-Replayed"] = "true"
            return response
        try:
            response = handler(self, request, *args, **kwargs)
        except Exception:
            record.delete()  # a request that failed before answering may be sent again with the same key
            raise
        record.status_code = response.status_code
        # Through the JSON encoder the answer was rendered with (UUIDs, datetimes, decimals become strings).
        record.response = json.loads(json.dumps(response.data, cls=DjangoJSONEncoder))
        record.save(update_fields=["status_code", "response"])
        return response

    wrapper.__name__ = handler.__name__
    wrapper.__doc__ = handler.__doc__
    return wrapper


class IdempotencyMismatch(exceptions.APIException):
    status_code = 422
    default_detail = "This Idempotency-Key was used with a different request."
    default_code = "idempotency_key_reused"


# --- tokens ------------------------------------------------------------------------------------------------------


class ApiTokenSerializer(RejectUnknownFieldsMixin, serializers.ModelSerializer):
    id = serializers.UUIDField(source="code", read_only=True)
    role = serializers.ChoiceField(choices=TokenRole.choices, default=TokenRole.MEMBER)
    is_active = serializers.BooleanField(read_only=True)

    class Meta:
        model = ApiToken
        fields = ["id", "name", "prefix", "role", "is_active", "created_at", "last_used_at", "revoked_at"]
        read_only_fields = ["prefix", "created_at", "last_used_at", "revoked_at"]


class ApiTokenCreatedSerializer(ApiTokenSerializer):
    token = serializers.CharField(read_only=True, help_text="Shown once: store it now.")

    class Meta(ApiTokenSerializer.Meta):
        fields = [*ApiTokenSerializer.Meta.fields, "token"]


class ApiTokenViewSet(TenantViewSetMixin, mixins.ListModelMixin, mixins.RetrieveModelMixin,
                      mixins.CreateModelMixin, mixins.DestroyModelMixin, viewsets.GenericViewSet):
    """API tokens of your organization (admins only). The token itself is shown once, when created."""

    tenant_model = ApiToken
    serializer_class = ApiTokenSerializer
    read_role = Role.ADMIN
    write_role = Role.ADMIN
    ordering = ["-created_at"]

    @extend_schema(responses={201: ApiTokenCreatedSerializer})
    def create(self, request, *args, **kwargs):
        serializer = self.get_serializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        token, plain = api_token_create(
            organization=request.org, name=serializer.validated_data["name"], role=serializer.validated_data["role"],
            created_by=request.user if getattr(request.user, "pk", None) else None,
        )
        token.token = plain
        return Response(ApiTokenCreatedSerializer(token).data, status=status.HTTP_201_CREATED)

    @extend_schema(summary="Revoke a token", responses={204: None})
    def destroy(self, request, *args, **kwargs):
        api_token_revoke(token=self.get_object())
        return Response(status=status.HTTP_204_NO_CONTENT)

    @extend_schema(summary="Revoke a token", request=None, responses={200: ApiTokenSerializer})
    @action(detail=True, methods=["post"])
    def revoke(self, request, *args, **kwargs):
        token = api_token_revoke(token=self.get_object())
        return Response(ApiTokenSerializer(token).data)


ROUTES = [("tokens", ApiTokenViewSet, "token")]
URLS = []
