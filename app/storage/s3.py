"""S3-compatible object store (AWS S3, MinIO; tested against moto's server)."""

from __future__ import annotations

import threading
from datetime import UTC, datetime
from typing import BinaryIO

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

from app.storage import ObjectNotFoundError, validate_key


class S3Store:
    """Objects under ``s3://bucket/prefix``; ``endpoint_url`` points at MinIO or another compatible server."""

    def __init__(self, bucket: str, prefix: str = "", *, endpoint_url: str | None = None,
                 region: str | None = None) -> None:
        if not bucket:
            raise ValueError("an s3:// storage URI needs a bucket: s3://bucket/prefix")
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.endpoint_url = endpoint_url
        self.region = region
        self.uri = f"s3://{bucket}/{self.prefix}" if self.prefix else f"s3://{bucket}"
        self._local = threading.local()

    @property
    def client(self):  # type: ignore[no-untyped-def]
        """A boto3 client per thread (clients are not shared across threads/processes)."""
        client = getattr(self._local, "client", None)
        if client is None:
            client = boto3.session.Session().client(
                "s3", endpoint_url=self.endpoint_url, region_name=self.region or "us-east-1",
                config=Config(retries={"max_attempts": 5, "mode": "standard"}, s3={"addressing_style": "path"}),
            )
            self._local.client = client
        return client

    def _key(self, key: str) -> str:
        validate_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    def put(self, key: str, data: bytes) -> None:
        """PUT is atomic in S3."""
        self.client.put_object(Bucket=self.bucket, Key=self._key(key), Body=data)

    def put_file(self, key: str, fileobj: BinaryIO) -> None:
        """Upload a file object in parts (multipart above 8 MB; never whole in memory; the object appears
        atomically when the upload completes)."""
        self.client.upload_fileobj(fileobj, self.bucket, self._key(key))

    def get(self, key: str) -> bytes:
        """GET an object."""
        try:
            return self.client.get_object(Bucket=self.bucket, Key=self._key(key))["Body"].read()
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                raise ObjectNotFoundError(key) from exc
            raise

    def exists(self, key: str) -> bool:
        """HEAD the object."""
        try:
            self.client.head_object(Bucket=self.bucket, Key=self._key(key))
            return True
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return False
            raise

    def delete(self, key: str) -> None:
        """DELETE (idempotent)."""
        self.client.delete_object(Bucket=self.bucket, Key=self._key(key))

    def list(self, prefix: str) -> list[str]:
        """Keys under ``prefix`` (paginated listing)."""
        full = self._key(prefix.rstrip("/")) if prefix else self.prefix
        if prefix.endswith("/"):
            full += "/"
        strip = len(self.prefix) + 1 if self.prefix else 0
        keys: list[str] = []
        for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=full):
            keys.extend(obj["Key"][strip:] for obj in page.get("Contents", []))
        return sorted(keys)

    def list_with_times(self, prefix: str) -> list[tuple[str, datetime]]:
        """``(key, LastModified)`` under ``prefix`` (the same paginated listing as :meth:`list`)."""
        full = self._key(prefix.rstrip("/")) if prefix else self.prefix
        if prefix.endswith("/"):
            full += "/"
        strip = len(self.prefix) + 1 if self.prefix else 0
        found: list[tuple[str, datetime]] = []
        for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=full):
            found.extend((obj["Key"][strip:], obj["LastModified"].astimezone(UTC)) for obj in page.get("Contents", []))
        return sorted(found)

    def ping(self) -> None:
        """HEAD the bucket."""
        self.client.head_bucket(Bucket=self.bucket)

    def ensure_bucket(self) -> None:
        """Create the bucket when missing (deployments, tests)."""
        try:
            self.client.head_bucket(Bucket=self.bucket)
        except ClientError:
            self.client.create_bucket(Bucket=self.bucket)
