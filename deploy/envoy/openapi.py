"""The OpenAPI 3.1 document of the REST API that Envoy's gRPC-JSON transcoder serves, generated from the protos.

    python -m deploy.envoy.openapi            # rewrite handwriting/web/openapi.yaml
    python -m deploy.envoy.openapi --check    # fail if it is stale (scripts/test.sh)

It reads the descriptor set Envoy reads (`deploy/envoy/handwriting.pb`, built with source info by
scripts/gen_protos.sh): each RPC's `google.api.http` rule gives a path, its request message the body (or, for an
`HttpBody` body, the raw upload with the other fields as query parameters), the response message the answer (a
JSON array of them for a server-streaming RPC: how the transcoder streams), and the proto comments the
descriptions. Field names and types follow the proto3 JSON mapping the transcoder uses (lowerCamelCase, 64-bit
integers as strings, bytes as base64, enums as their names). Envoy serves the document at `/openapi.yaml`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml
from google.api import annotations_pb2
from google.protobuf import descriptor_pb2

from deploy.envoy.config import DESCRIPTOR, PUBLIC_SERVICES

OUTPUT = Path(__file__).resolve().parents[2] / "handwriting" / "web" / "openapi.yaml"
F = descriptor_pb2.FieldDescriptorProto
SCALARS = {
    F.TYPE_DOUBLE: {"type": "number", "format": "double"},
    F.TYPE_FLOAT: {"type": "number", "format": "float"},
    F.TYPE_INT32: {"type": "integer", "format": "int32"},
    F.TYPE_SINT32: {"type": "integer", "format": "int32"},
    F.TYPE_SFIXED32: {"type": "integer", "format": "int32"},
    F.TYPE_UINT32: {"type": "integer", "format": "int64", "minimum": 0},
    F.TYPE_FIXED32: {"type": "integer", "format": "int64", "minimum": 0},
    F.TYPE_INT64: {"type": "string", "format": "int64"},
    F.TYPE_SINT64: {"type": "string", "format": "int64"},
    F.TYPE_SFIXED64: {"type": "string", "format": "int64"},
    F.TYPE_UINT64: {"type": "string", "format": "uint64"},
    F.TYPE_FIXED64: {"type": "string", "format": "uint64"},
    F.TYPE_BOOL: {"type": "boolean"},
    F.TYPE_STRING: {"type": "string"},
    F.TYPE_BYTES: {"type": "string", "contentEncoding": "base64"},
}
WELL_KNOWN = {
    ".google.protobuf.Any": {
        "type": "object",
        "properties": {"@type": {"type": "string"}},
        "additionalProperties": True,
    },
    ".google.protobuf.Duration": {"type": "string", "description": "seconds with an `s` suffix, such as `1.5s`"},
    ".google.protobuf.Timestamp": {"type": "string", "format": "date-time"},
}
STATUS = {  # google.rpc.Status as the transcoder writes it (convert_grpc_status)
    "type": "object",
    "properties": {
        "code": {
            "type": "integer",
            "description": "the gRPC status code (3 INVALID_ARGUMENT, 8 RESOURCE_EXHAUSTED, ...)",
        },
        "message": {"type": "string"},
        "details": {
            "type": "array",
            "description": "google.rpc.ErrorInfo (a stable `reason`), BadRequest (the fields at fault), RetryInfo",
            "items": {"type": "object", "properties": {"@type": {"type": "string"}}, "additionalProperties": True},
        },
    },
}
UPLOAD_TYPES = ["application/pdf", "image/png", "image/jpeg", "image/tiff", "image/webp", "image/bmp"]


class Spec:
    def __init__(self, files: list[descriptor_pb2.FileDescriptorProto]):
        self.messages, self.enums, self.comments = {}, {}, {}
        for file in files:
            for location in file.source_code_info.location:
                text = (location.leading_comments or location.trailing_comments).strip()
                if text:
                    self.comments[(file.name, tuple(location.path))] = " ".join(text.split())
            for index, message in enumerate(file.message_type):
                self._add_message(file, f".{file.package}", message, (4, index))
            for index, enum in enumerate(file.enum_type):
                self.enums[f".{file.package}.{enum.name}"] = (file, enum, (5, index))
        self.schemas: dict[str, dict] = {}

    def _add_message(self, file, scope: str, message, path: tuple) -> None:
        name = f"{scope}.{message.name}"
        self.messages[name] = (file, message, path)
        for index, nested in enumerate(message.nested_type):
            self._add_message(file, name, nested, (*path, 3, index))
        for index, enum in enumerate(message.enum_type):
            self.enums[f"{name}.{enum.name}"] = (file, enum, (*path, 4, index))

    def comment(self, file, path: tuple) -> str:
        return self.comments.get((file.name, path), "")

    def ref(self, type_name: str) -> dict:
        """A $ref to the schema of message or enum `type_name`, made on first use."""
        if type_name in WELL_KNOWN:
            return dict(WELL_KNOWN[type_name])
        key = (
            type_name.lstrip(".").replace(".", "_") if not type_name.startswith(".handwriting.v1.") else type_name[16:]
        )
        if key not in self.schemas:
            self.schemas[key] = {}  # placeholder: recursive messages refer to themselves
            self.schemas[key] = (
                self.enum_schema(type_name) if type_name in self.enums else self.message_schema(type_name)
            )
        return {"$ref": f"#/components/schemas/{key}"}

    def enum_schema(self, type_name: str) -> dict:
        file, enum, path = self.enums[type_name]
        schema = {"type": "string", "enum": [value.name for value in enum.value]}
        lines = [self.comment(file, path)]
        lines += [f"- `{v.name}`: {self.comment(file, (*path, 2, i))}" for i, v in enumerate(enum.value)]
        schema["description"] = "\n".join(line for line in lines if line)
        return schema

    def field_schema(self, file, message, field, path: tuple) -> dict:
        if field.type == F.TYPE_MESSAGE:
            entry = self.messages.get(field.type_name)
            if entry and entry[1].options.map_entry:
                value = entry[1].field[1]
                schema = {"type": "object", "additionalProperties": self.field_schema(file, entry[1], value, ())}
                return self._describe(schema, file, path)
            schema = self.ref(field.type_name)
        elif field.type == F.TYPE_ENUM:
            schema = self.ref(field.type_name)
        else:
            schema = dict(SCALARS[field.type])
        if field.label == F.LABEL_REPEATED:
            schema = {"type": "array", "items": schema}
        return self._describe(schema, file, path)

    def _describe(self, schema: dict, file, path: tuple) -> dict:
        description = self.comment(file, path) if path else ""
        if description and "$ref" in schema:
            return {"allOf": [schema], "description": description}
        return {**schema, "description": description} if description else schema

    def message_schema(self, type_name: str, skip: tuple[str, ...] = ()) -> dict:
        file, message, path = self.messages[type_name]
        properties = {
            field.json_name: self.field_schema(file, message, field, (*path, 2, index))
            for index, field in enumerate(message.field)
            if field.name not in skip
        }
        schema = {"type": "object", "properties": properties}
        if self.comment(file, path):
            schema["description"] = self.comment(file, path)
        return schema

    def query_parameters(self, type_name: str, body_field: str) -> list[dict]:
        file, message, path = self.messages[type_name]
        parameters = []
        for index, field in enumerate(message.field):
            if field.name == body_field:
                continue
            schema = self.field_schema(file, message, field, ())
            parameters.append(
                {
                    "name": field.json_name,
                    "in": "query",
                    "required": False,
                    "description": self.comment(file, (*path, 2, index)),
                    "schema": schema,
                    **({"explode": True} if field.label == F.LABEL_REPEATED else {}),
                }
            )
        return parameters


def generate(descriptor: Path = DESCRIPTOR) -> dict:
    files = descriptor_pb2.FileDescriptorSet.FromString(descriptor.read_bytes()).file
    spec = Spec(list(files))
    paths: dict[str, dict] = {}
    for file in files:
        for service_index, service in enumerate(file.service):
            if f"{file.package}.{service.name}" not in PUBLIC_SERVICES:
                continue
            for method_index, method in enumerate(service.method):
                rule = method.options.Extensions[annotations_pb2.http]
                verb = rule.WhichOneof("pattern")
                if verb is None or verb == "custom":
                    continue
                operation = {
                    "operationId": method.name,
                    "summary": spec.comment(file, (6, service_index, 2, method_index)).split(". ")[0].rstrip("."),
                    "description": spec.comment(file, (6, service_index, 2, method_index)),
                    "tags": [service.name],
                }
                _, request, _ = spec.messages[method.input_type]
                body_field = next((f for f in request.field if f.name == rule.body), None)
                if rule.body == "*":
                    operation["requestBody"] = {
                        "required": True,
                        "content": {"application/json": {"schema": spec.ref(method.input_type)}},
                    }
                elif body_field is not None and body_field.type_name == ".google.api.HttpBody":
                    operation["parameters"] = spec.query_parameters(method.input_type, rule.body)
                    binary = {"schema": {"type": "string", "format": "binary"}}
                    operation["requestBody"] = {"required": True, "content": {kind: binary for kind in UPLOAD_TYPES}}
                answer = spec.ref(method.output_type)
                if method.server_streaming:  # the transcoder streams the messages as one JSON array
                    answer = {"type": "array", "items": answer}
                operation["responses"] = {
                    "200": {"description": "OK", "content": {"application/json": {"schema": answer}}},
                    "default": {
                        "description": "An error: the gRPC status as JSON, with its HTTP code (400 for "
                        "INVALID_ARGUMENT, 401, 413, 429 with retry-after, 503, ...)",
                        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Status"}}},
                    },
                }
                paths.setdefault(getattr(rule, verb), {})[verb] = operation
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Handwriting OCR",
            "version": "v1",
            "description": "The REST face of handwriting.v1.OcrService, served by Envoy's gRPC-JSON transcoder. "
            "Generated from protos/ by `python -m deploy.envoy.openapi`; do not edit.",
        },
        "servers": [{"url": "http://localhost:8080", "description": "handwriting serve"}],
        "security": [{"apiKey": []}, {"bearer": []}],
        "paths": dict(sorted(paths.items())),
        "components": {
            "securitySchemes": {
                "apiKey": {"type": "apiKey", "in": "header", "name": "x-api-key"},
                "bearer": {"type": "http", "scheme": "bearer", "description": "an API key, or a JWT where configured"},
            },
            "schemas": dict(sorted({**spec.schemas, "Status": STATUS}.items())),
        },
    }


class _Dumper(yaml.SafeDumper):
    def ignore_aliases(self, data) -> bool:  # each schema written out where it is used: no &anchors
        return True


def render(document: dict) -> str:
    body = yaml.dump(document, Dumper=_Dumper, sort_keys=False, width=100, allow_unicode=True)
    return "# Generated by `python -m deploy.envoy.openapi` from protos/; do not edit.\n" + body


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="fail if the committed document is stale")
    args = parser.parse_args(argv)
    text = render(generate())
    if args.check:
        if not OUTPUT.exists() or OUTPUT.read_text() != text:
            print(f"stale: {OUTPUT}: run python -m deploy.envoy.openapi", file=sys.stderr)
            return 1
        return 0
    OUTPUT.parent.mkdir(parents=True, exist_ok=True)
    OUTPUT.write_text(text)
    print(f"wrote {OUTPUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
