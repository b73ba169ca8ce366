"""``S3BlobStore``: the ``BlobStore`` port on one S3 bucket (boto3 client injected); the bucket's
lifecycle rule expires objects, so nothing here deletes."""

from __future__ import annotations

import math
from typing import Any

from botocore.exceptions import ClientError

from hatchway_relay.ports import BlobTooLarge

MIN_URL_SECONDS = 1
"""S3 presigns for whole seconds, at least one."""


class S3BlobStore:
    def __init__(self, client: Any, bucket: str) -> None:
        self.client = client
        self.bucket = bucket

    def put(self, key: str, data: bytes) -> None:
        self.client.put_object(Bucket=self.bucket, Key=key, Body=data)

    def delete(self, key: str) -> None:
        # Free on S3 (DELETE requests are not billed), and it stops the storage bill at once.
        self.client.delete_object(Bucket=self.bucket, Key=key)

    def get(self, key: str, max_bytes: int) -> bytes | None:
        try:
            answer = self.client.get_object(Bucket=self.bucket, Key=key)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                return None
            raise
        body = answer["Body"]
        try:
            # Refuse from the header, before a byte of a possibly huge body is read.
            size = int(answer.get("ContentLength", 0))
            if size > max_bytes:
                raise BlobTooLarge(key, size, max_bytes)
            data: bytes = body.read(max_bytes + 1)
        finally:
            body.close()
        if len(data) > max_bytes:  # the header lied; never hold more than the caller allows
            raise BlobTooLarge(key, len(data), max_bytes)
        return data

    def download_url(self, key: str, expires_in: float) -> str:
        return self._presign("get_object", key, expires_in)

    def upload_url(self, key: str, expires_in: float) -> str:
        return self._presign("put_object", key, expires_in)

    def _presign(self, operation: str, key: str, expires_in: float) -> str:
        url: str = self.client.generate_presigned_url(
            operation,
            Params={"Bucket": self.bucket, "Key": key},
            ExpiresIn=max(MIN_URL_SECONDS, math.ceil(expires_in)),
        )
        return url
