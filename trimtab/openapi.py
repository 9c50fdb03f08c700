"""OpenAPI 3.1 pieces shared by the HTTP faces: JSON schemas of proto messages (derived from the
`trimtab.v1` descriptors, never written by hand) and the API-key security schemes."""

from __future__ import annotations

from typing import Any

from google.protobuf.descriptor import Descriptor, FieldDescriptor

SECURITY_SCHEMES: dict[str, dict[str, str]] = {
    "bearer": {"type": "http", "scheme": "bearer"},
    "apiKey": {"type": "apiKey", "in": "header", "name": "x-api-key"},
}
SECURITY: list[dict[str, list[str]]] = [{"bearer": []}, {"apiKey": []}, {}]  # {}: no key while auth is off

_SCALARS: dict[int, dict[str, Any]] = {
    FieldDescriptor.TYPE_STRING: {"type": "string"},
    FieldDescriptor.TYPE_BOOL: {"type": "boolean"},
    FieldDescriptor.TYPE_BYTES: {"type": "string", "contentEncoding": "base64"},
    FieldDescriptor.TYPE_DOUBLE: {"type": "number"},
    FieldDescriptor.TYPE_FLOAT: {"type": "number"},
    FieldDescriptor.TYPE_INT32: {"type": "integer", "format": "int32"},
    FieldDescriptor.TYPE_SINT32: {"type": "integer", "format": "int32"},
    FieldDescriptor.TYPE_SFIXED32: {"type": "integer", "format": "int32"},
    FieldDescriptor.TYPE_UINT32: {"type": "integer", "format": "uint32", "minimum": 0},
    FieldDescriptor.TYPE_FIXED32: {"type": "integer", "format": "uint32", "minimum": 0},
    # proto3 JSON writes 64-bit integers as strings (and reads either).
    FieldDescriptor.TYPE_INT64: {"type": ["string", "integer"], "format": "int64"},
    FieldDescriptor.TYPE_SINT64: {"type": ["string", "integer"], "format": "int64"},
    FieldDescriptor.TYPE_SFIXED64: {"type": ["string", "integer"], "format": "int64"},
    FieldDescriptor.TYPE_UINT64: {"type": ["string", "integer"], "format": "uint64"},
    FieldDescriptor.TYPE_FIXED64: {"type": ["string", "integer"], "format": "uint64"},
}
_WELL_KNOWN = {"google.protobuf.Timestamp": {"type": "string", "format": "date-time"}}


def message_schemas(root: Descriptor) -> dict[str, dict[str, Any]]:
    """JSON schemas of `root` and every message it contains, by full name."""
    schemas: dict[str, dict[str, Any]] = {}
    pending = [root]
    while pending:
        descriptor = pending.pop()
        if descriptor.full_name in schemas or descriptor.full_name in _WELL_KNOWN:
            continue
        properties: dict[str, Any] = {}
        for field in descriptor.fields:  # proto3 JSON reads either name, and writes the camelCase one
            properties[field.name] = properties[field.json_name] = _field_schema(field)
        schema: dict[str, Any] = {"type": "object", "properties": properties, "additionalProperties": False}
        oneofs = [o for o in descriptor.oneofs if not o.name.startswith("_")]  # "_x": proto3 optional
        if oneofs:
            names = "; ".join(f"{o.name}: one of {', '.join(f.name for f in o.fields)}" for o in oneofs)
            schema["description"] = f"At most one field of each oneof is set ({names})."
        schemas[descriptor.full_name] = schema
        pending += [f.message_type for f in descriptor.fields if f.message_type is not None]
    return schemas


def _field_schema(field: FieldDescriptor) -> dict[str, Any]:
    if field.message_type is not None and field.message_type.GetOptions().map_entry:
        value = field.message_type.fields_by_name["value"]
        return {"type": "object", "additionalProperties": _single(value)}
    single = _single(field)
    return {"type": "array", "items": single} if field.is_repeated else single


def _single(field: FieldDescriptor) -> dict[str, Any]:
    if field.message_type is not None:
        name = field.message_type.full_name
        return dict(_WELL_KNOWN[name]) if name in _WELL_KNOWN else {"$ref": f"#/components/schemas/{name}"}
    if field.enum_type is not None:
        return {"type": "string", "enum": [value.name for value in field.enum_type.values]}
    return dict(_SCALARS[field.type])
