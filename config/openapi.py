"""The API's OpenAPI schema class (REST_FRAMEWORK's DEFAULT_SCHEMA_CLASS).

Apart from config.api because drf-spectacular's AutoSchema imports DRF's settings, which import config.api.
"""

from drf_spectacular.openapi import AutoSchema
from rest_framework.fields import ProhibitNullCharactersValidator

from config.api import RejectUnknownFieldsMixin

NO_NUL = "^[^\\x00]*$"


class ResyncAutoSchema(AutoSchema):
    """drf-spectacular's schema, told what the server refuses that DRF's fields do not say by themselves: unknown
    keys in the request bodies of RejectUnknownFieldsMixin serializers, empty lists where allow_empty is off, and
    the NUL character in strings.
    tests/api/test_schema_conformance.py holds the schema and the server to each other."""

    def _map_basic_serializer(self, serializer, direction):
        schema = super()._map_basic_serializer(serializer, direction)
        if direction == "request" and isinstance(serializer, RejectUnknownFieldsMixin):
            schema["additionalProperties"] = False
        return schema

    def _map_serializer_field(self, field, direction, bypass_extensions=False):
        schema = super()._map_serializer_field(field, direction, bypass_extensions)
        if (isinstance(schema, dict) and direction == "request" and schema.get("type") == "string"
                and "pattern" not in schema and "enum" not in schema
                and any(isinstance(v, ProhibitNullCharactersValidator) for v in getattr(field, "validators", ()))):
            # DRF's strings refuse NUL (PostgreSQL cannot store it).
            schema["pattern"] = NO_NUL
        if isinstance(schema, dict) and direction == "request" and getattr(field, "allow_empty", True) is False:
            if schema.get("type") == "array":
                schema["minItems"] = max(schema.get("minItems", 0), 1)
            elif schema.get("type") == "object":
                schema["minProperties"] = max(schema.get("minProperties", 0), 1)
        return schema
