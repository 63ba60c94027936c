"""The corrections store: word crops that a person read for the service, kept as training data.

Each correction is two objects named by one id: `<id>.png`, the word's crop exactly as the recognizer is given
it (`services.common.crops.cut_crop`), and `<id>.json`, the text the person says it reads with what the service
read and its confidence. The store is a directory (the default, HW_CORRECTIONS_URI=corrections) or an S3 prefix
(HW_CORRECTIONS_URI=s3://bucket/prefix, on AWS). `python -m training.finetune_corrections` reads either.
The JSON is written last, so a reader that lists `*.json` never finds a correction without its crop.
"""

from __future__ import annotations

import json
import os
import tempfile
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol


class CorrectionStore(Protocol):
    uri: str

    def put(self, crop_png: bytes, record: dict) -> str: ...

    def items(self) -> Iterator[tuple[str, bytes, dict]]: ...


def new_id() -> str:
    """Sortable by time, unique across orchestrator replicas."""
    return f"{datetime.now(UTC):%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:12]}"


class DirectoryStore:
    def __init__(self, root: str | Path):
        self.root = Path(root).expanduser().resolve()
        self.uri = str(self.root)

    def put(self, crop_png: bytes, record: dict) -> str:
        self.root.mkdir(parents=True, exist_ok=True)
        correction_id = new_id()
        self._write(f"{correction_id}.png", crop_png)
        self._write(f"{correction_id}.json", json.dumps({"id": correction_id, **record}, indent=1).encode())
        return correction_id

    def _write(self, name: str, data: bytes) -> None:
        with tempfile.NamedTemporaryFile(dir=self.root, prefix=".", delete=False) as handle:
            handle.write(data)
        os.replace(handle.name, self.root / name)  # atomic: a reader sees the whole file or none

    def items(self) -> Iterator[tuple[str, bytes, dict]]:
        for path in sorted(self.root.glob("*.json")):
            crop = path.with_suffix(".png")
            if crop.exists():
                yield path.stem, crop.read_bytes(), json.loads(path.read_text())


class S3Store:
    def __init__(self, uri: str, client=None):
        import boto3  # only where corrections go to S3

        bucket, _, prefix = uri.removeprefix("s3://").partition("/")
        if not bucket:
            raise ValueError(f"{uri!r} names no bucket: use s3://bucket/prefix")
        self.uri, self.bucket, self.prefix = uri, bucket, prefix.strip("/") + "/" if prefix.strip("/") else ""
        self.client = client or boto3.client("s3")

    def put(self, crop_png: bytes, record: dict) -> str:
        correction_id = new_id()
        key = f"{self.prefix}{correction_id}"
        self.client.put_object(Bucket=self.bucket, Key=f"{key}.png", Body=crop_png, ContentType="image/png")
        body = json.dumps({"id": correction_id, **record}, indent=1).encode()
        self.client.put_object(Bucket=self.bucket, Key=f"{key}.json", Body=body, ContentType="application/json")
        return correction_id

    def items(self) -> Iterator[tuple[str, bytes, dict]]:
        pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=self.prefix)
        for page in pages:
            for item in page.get("Contents", []):
                if not item["Key"].endswith(".json"):
                    continue
                key = item["Key"].removesuffix(".json")
                record = json.loads(self.client.get_object(Bucket=self.bucket, Key=item["Key"])["Body"].read())
                crop = self.client.get_object(Bucket=self.bucket, Key=f"{key}.png")["Body"].read()
                yield key.rsplit("/", 1)[-1], crop, record


def open_store(uri: str) -> CorrectionStore:
    return S3Store(uri) if uri.startswith("s3://") else DirectoryStore(uri)
