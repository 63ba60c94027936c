"""Rich gRPC errors: google.rpc.Status with BadRequest / ErrorInfo details."""

from __future__ import annotations

import math

import grpc
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

DOMAIN = "handwriting.v1"


def _pack(message) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)
    return packed


def bad_request(field: str, description: str, reason: str = "INVALID_ARGUMENT") -> grpc.Status:
    """INVALID_ARGUMENT with a BadRequest detail naming the field, and an ErrorInfo with a stable reason."""
    details = [
        _pack(
            error_details_pb2.BadRequest(
                field_violations=[error_details_pb2.BadRequest.FieldViolation(field=field, description=description)]
            )
        ),
        _pack(error_details_pb2.ErrorInfo(reason=reason, domain=DOMAIN)),
    ]
    status = status_pb2.Status(code=code_pb2.INVALID_ARGUMENT, message=description, details=details)
    return rpc_status.to_status(status)


def error(
    code: grpc.StatusCode,
    message: str,
    reason: str,
    metadata: dict[str, str] | None = None,
    retry_after_seconds: float | None = None,
) -> grpc.Status:
    """Any code with an ErrorInfo detail (e.g. UNAVAILABLE with reason DETECTOR_UNAVAILABLE), and a RetryInfo
    where `retry_after_seconds` says when to try again; that also goes out as a `retry-after` trailer (whole
    seconds), which Envoy's REST mapping turns into the HTTP header that HTTP clients honour."""
    details = [_pack(error_details_pb2.ErrorInfo(reason=reason, domain=DOMAIN, metadata=metadata or {}))]
    if retry_after_seconds is not None:
        retry = error_details_pb2.RetryInfo()
        retry.retry_delay.FromMilliseconds(int(retry_after_seconds * 1000))
        details.append(_pack(retry))
    status = rpc_status.to_status(status_pb2.Status(code=code.value[0], message=message, details=details))
    if retry_after_seconds is None:
        return status
    retry_after = ("retry-after", str(max(1, math.ceil(retry_after_seconds))))
    return status._replace(trailing_metadata=(*status.trailing_metadata, retry_after))


def overloaded(message: str, retry_after_seconds: float) -> grpc.Status:
    """RESOURCE_EXHAUSTED with a RetryInfo saying when to try again (Envoy's REST mapping: HTTP 429)."""
    return error(grpc.StatusCode.RESOURCE_EXHAUSTED, message, "OVERLOADED", None, retry_after_seconds)


def details_of(rpc_error: grpc.RpcError) -> list:
    """Unpacked details of a rich error, for clients and tests."""
    status = rpc_status.from_call(rpc_error)
    if status is None:
        return []
    unpacked = []
    for detail in status.details:
        for kind in (error_details_pb2.BadRequest, error_details_pb2.ErrorInfo, error_details_pb2.RetryInfo):
            if detail.Is(kind.DESCRIPTOR):
                message = kind()
                detail.Unpack(message)
                unpacked.append(message)
    return unpacked
