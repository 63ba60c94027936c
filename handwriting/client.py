"""A thin typed client over the generated OcrService stubs, with deadlines and retries.

    from handwriting import OcrClient
    with OcrClient("localhost:50051") as client:
        page = client.process_page("page.jpg").page
        print(page.text)

Retries on UNAVAILABLE use gRPC's own retry policy (service config), with exponential backoff.
Through Envoy with API keys on, pass `api_key=` (or set HW_API_KEY): it goes in `x-api-key`; with TLS,
`tls_ca=` the certificate file to trust (or HW_TLS_CA); where Envoy validates JWTs instead of keys,
`bearer_token=` (or HW_BEARER_TOKEN).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import grpc
from google.rpc import error_details_pb2

from handwriting.v1 import image_pb2, ocr_service_pb2, ocr_service_pb2_grpc
from services.common import errors, healthcheck

OCR_SERVICE = "handwriting.v1.OcrService"


class OcrError(Exception):
    """A failed call: the gRPC code, the message and the field violations the server named."""

    def __init__(
        self,
        code: grpc.StatusCode,
        message: str,
        violations: list[tuple[str, str]],
        reason: str = "",
        retry_after: float | None = None,
    ):
        super().__init__(f"{code.name}: {message}")
        self.code = code
        self.message = message
        self.violations = violations
        self.reason = reason
        self.retry_after = retry_after  # seconds, when the server said when to try again (RetryInfo)

    @classmethod
    def from_rpc_error(cls, error: grpc.RpcError) -> OcrError:
        violations, reason, retry_after = [], "", None
        for detail in errors.details_of(error):
            if isinstance(detail, error_details_pb2.BadRequest):
                violations += [(v.field, v.description) for v in detail.field_violations]
            elif isinstance(detail, error_details_pb2.RetryInfo):
                retry_after = detail.retry_delay.ToMilliseconds() / 1000
            else:
                reason = detail.reason
        return cls(error.code(), error.details() or "", violations, reason, retry_after)


def _service_config(retries: int, backoff: float) -> str:
    return json.dumps(
        {
            "methodConfig": [
                {
                    "name": [{"service": OCR_SERVICE}],
                    "retryPolicy": {
                        "maxAttempts": max(2, retries + 1),
                        "initialBackoff": f"{backoff}s",
                        "maxBackoff": f"{max(backoff, 5.0)}s",
                        "backoffMultiplier": 2,
                        "retryableStatusCodes": ["UNAVAILABLE"],
                    },
                }
            ]
        }
    )


class OcrClient:
    def __init__(
        self,
        address: str = "localhost:50051",
        timeout: float = 60.0,
        retries: int = 3,
        backoff: float = 0.2,
        max_message_mb: int = 64,
        api_key: str | None = None,
        tls_ca: str | Path | None = None,
        bearer_token: str | None = None,
    ):
        self.address = address
        self.timeout = timeout
        api_key = api_key if api_key is not None else os.environ.get("HW_API_KEY", "")
        self.metadata = (("x-api-key", api_key),) if api_key else ()
        bearer_token = bearer_token if bearer_token is not None else os.environ.get("HW_BEARER_TOKEN", "")
        if bearer_token:  # a JWT from the caller's identity provider, where Envoy validates JWTs
            self.metadata += (("authorization", f"Bearer {bearer_token}"),)
        size = max_message_mb * 1024 * 1024
        options = [
            ("grpc.enable_retries", 1),
            ("grpc.service_config", _service_config(retries, backoff)),
            ("grpc.max_send_message_length", size),
            ("grpc.max_receive_message_length", size),
        ]
        tls_ca = tls_ca if tls_ca is not None else os.environ.get("HW_TLS_CA")
        if tls_ca:  # TLS to Envoy, trusting the certificate authority (or self-signed certificate) in this file
            credentials = grpc.ssl_channel_credentials(root_certificates=Path(tls_ca).read_bytes())
            self.channel = grpc.secure_channel(address, credentials, options=options)
        else:
            self.channel = grpc.insecure_channel(address, options=options)
        self.stub = ocr_service_pb2_grpc.OcrServiceStub(self.channel)

    def process_page(
        self, image: bytes | str | Path, min_detection_score: float = 0.0, timeout: float | None = None
    ) -> ocr_service_pb2.ProcessPageResponse:
        """OCR one page given as encoded bytes or a file path. Raises OcrError."""
        content = image if isinstance(image, bytes) else Path(image).read_bytes()
        request = ocr_service_pb2.ProcessPageRequest(
            image=image_pb2.Image(content=content), min_detection_score=min_detection_score
        )
        try:
            return self.stub.ProcessPage(request, timeout=timeout or self.timeout, metadata=self.metadata)
        except grpc.RpcError as error:
            raise OcrError.from_rpc_error(error) from error

    def process_document(
        self, document: bytes | str | Path, min_detection_score: float = 0.0, dpi: int = 0, timeout: float | None = None
    ) -> Iterator[ocr_service_pb2.ProcessDocumentResponse]:
        """OCR every page of a PDF, a multi-page TIFF or an image; yields each page's result as it is read.
        `timeout` bounds the whole document (default: the client's timeout per page, 100 pages at most).
        Raises OcrError."""
        content = document if isinstance(document, bytes) else Path(document).read_bytes()
        request = ocr_service_pb2.ProcessDocumentRequest(
            content=content, min_detection_score=min_detection_score, dpi=dpi
        )
        try:
            yield from self.stub.ProcessDocument(request, timeout=timeout or 100 * self.timeout, metadata=self.metadata)
        except grpc.RpcError as error:
            raise OcrError.from_rpc_error(error) from error

    def export_page(
        self, page, export_format: int | str, image_name: str = "page.png", timeout: float | None = None
    ) -> ocr_service_pb2.Export:
        """`page` (as read, or with words corrected) in a standard format: ocr_service_pb2.EXPORT_FORMAT_ALTO or
        its name ("EXPORT_FORMAT_ALTO"). Raises OcrError."""
        if isinstance(export_format, str):
            export_format = ocr_service_pb2.ExportFormat.Value(export_format)
        request = ocr_service_pb2.ExportPageRequest(page=page, format=export_format, image_name=image_name)
        try:
            return self.stub.ExportPage(request, timeout=timeout or self.timeout, metadata=self.metadata).export
        except grpc.RpcError as error:
            raise OcrError.from_rpc_error(error) from error

    def submit_correction(
        self, image: bytes | str | Path, word, text: str, source: str = "", timeout: float | None = None
    ) -> str:
        """Store what `word` (a Word of a page read from `image`) really reads, as training data; returns the
        correction's id. `image` is the page (or a part of it, with the word's box moved to match). Raises
        OcrError."""
        content = image if isinstance(image, bytes) else Path(image).read_bytes()
        request = ocr_service_pb2.SubmitCorrectionRequest(
            image=image_pb2.Image(content=content),
            bounding_poly=word.bounding_poly,
            text=text,
            recognized_text=word.text,
            confidence=word.confidence,
            source=source,
        )
        try:
            return self.stub.SubmitCorrection(
                request, timeout=timeout or self.timeout, metadata=self.metadata
            ).correction_id
        except grpc.RpcError as error:
            raise OcrError.from_rpc_error(error) from error

    def health(self, service: str = "", timeout: float = 5.0) -> str:
        """SERVING, NOT_SERVING, or UNAVAILABLE when nothing answers."""
        return healthcheck.check(self.channel, service, timeout)

    def close(self) -> None:
        self.channel.close()

    def __enter__(self) -> OcrClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
