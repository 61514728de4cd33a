"""Where finished videos live: a small protocol and the local-disk backend.

Keys look like `<job_id>/video.mp4`. A backend stores bytes under a key, says how
big they are and what their ETag is, streams a byte range, and, if it can, makes a
time-limited URL that a client may fetch directly (S3's presigned URLs; local
storage has none and returns None, so the API streams the file itself).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Protocol

CHUNK_BYTES = 64 * 1024


@dataclass(frozen=True)
class StoredObject:
    key: str
    size: int
    etag: str  # quoted, as sent in the ETag header
    content_type: str

    def as_asset(self) -> dict:
        """The form JobStore.complete() keeps per variant."""
        return {"key": self.key, "size": self.size, "etag": self.etag, "content_type": self.content_type}


class Storage(Protocol):
    def put(self, key: str, data: bytes | os.PathLike | str, content_type: str) -> StoredObject: ...

    def get(self, key: str) -> bytes: ...

    def stat(self, key: str) -> StoredObject | None:
        """Size, ETag and content type, or None when the key does not exist."""

    def open_range(self, key: str, start: int = 0, end: int | None = None) -> Iterator[bytes]:
        """Stream bytes start..end (inclusive; None = to the end) in chunks."""

    def exists(self, key: str) -> bool: ...

    def size(self, key: str) -> int: ...

    def etag(self, key: str) -> str: ...

    def delete(self, key: str) -> None: ...

    def delete_prefix(self, prefix: str) -> int:
        """Delete every key under `prefix/` (a job's assets); returns how many."""

    def presigned_url(self, key: str, expires_in: int) -> str | None:
        """A URL a client can GET directly for `expires_in` seconds, or None if unsupported."""


def _check_key(key: str) -> str:
    parts = key.split("/")
    if not key or key.startswith("/") or any(p in ("", ".", "..") for p in parts) or "\\" in key:
        raise ValueError(f"invalid storage key {key!r}")
    return key


class LocalStorage:
    """Files under a root directory; metadata (content type, ETag) in a sidecar JSON file."""

    def __init__(self, root: os.PathLike | str):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    def _path(self, key: str) -> Path:
        return self.root / _check_key(key)

    def _meta_path(self, key: str) -> Path:
        path = self._path(key)
        return path.with_name(path.name + ".meta.json")

    def put(self, key: str, data: bytes | os.PathLike | str, content_type: str) -> StoredObject:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        digest = hashlib.md5(usedforsecurity=False)
        # Write to a temporary file and rename, so that a reader never sees half a file
        # and a redelivered job overwrites its earlier attempt's files atomically.
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".put-")
        try:
            with os.fdopen(fd, "wb") as out:
                if isinstance(data, (bytes, bytearray, memoryview)):
                    digest.update(data)
                    out.write(data)
                else:
                    with open(data, "rb") as source:
                        while chunk := source.read(CHUNK_BYTES):
                            digest.update(chunk)
                            out.write(chunk)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        stored = StoredObject(key, path.stat().st_size, f'"{digest.hexdigest()}"', content_type)
        self._meta_path(key).write_text(json.dumps({"etag": stored.etag, "content_type": content_type}))
        return stored

    def get(self, key: str) -> bytes:
        return self._path(key).read_bytes()

    def stat(self, key: str) -> StoredObject | None:
        path = self._path(key)
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            return None
        try:
            meta = json.loads(self._meta_path(key).read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            meta = {}
        etag = meta.get("etag") or f'"{size:x}-{path.stat().st_mtime_ns:x}"'
        return StoredObject(key, size, etag, meta.get("content_type", "application/octet-stream"))

    def open_range(self, key: str, start: int = 0, end: int | None = None) -> Iterator[bytes]:
        path = self._path(key)
        handle = open(path, "rb")  # opened now, so a missing file fails before streaming starts

        def chunks() -> Iterator[bytes]:
            with handle:
                handle.seek(start)
                remaining = None if end is None else end - start + 1
                while remaining is None or remaining > 0:
                    chunk = handle.read(CHUNK_BYTES if remaining is None else min(CHUNK_BYTES, remaining))
                    if not chunk:
                        return
                    if remaining is not None:
                        remaining -= len(chunk)
                    yield chunk

        return chunks()

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def size(self, key: str) -> int:
        return self._path(key).stat().st_size

    def etag(self, key: str) -> str:
        stored = self.stat(key)
        if stored is None:
            raise FileNotFoundError(key)
        return stored.etag

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)
        self._meta_path(key).unlink(missing_ok=True)

    def delete_prefix(self, prefix: str) -> int:
        directory = self._path(prefix)
        if not directory.is_dir():
            return 0
        count = sum(1 for p in directory.rglob("*") if p.is_file() and not p.name.endswith(".meta.json"))
        shutil.rmtree(directory, ignore_errors=True)
        return count

    def presigned_url(self, key: str, expires_in: int) -> str | None:
        return None


# Objects per DeleteObjects request: S3's own limit.
S3_DELETE_BATCH = 1000
# SigV4 presigned URLs live at most seven days.
S3_MAX_PRESIGN_SECONDS = 7 * 24 * 3600


class S3Storage:
    """Objects in an S3 bucket (AWS S3, MinIO, R2, Ceph ...) under an optional key prefix.

    Credentials come from boto3's usual chain (AWS_ACCESS_KEY_ID and
    AWS_SECRET_ACCESS_KEY, AWS_PROFILE, an instance or task role), never from
    Reel's settings. Presigned URLs are signed for `public_endpoint_url` when it
    is set: a SigV4 signature covers the host, so a URL signed for the address the
    API uses inside its network (http://minio:9000) is useless to a browser.
    """

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        endpoint_url: str | None = None,
        region: str | None = None,
        public_endpoint_url: str | None = None,
    ):
        import boto3
        from botocore.config import Config

        if not bucket:
            raise ValueError("S3 storage needs a bucket (REEL_S3_BUCKET)")
        self.bucket = bucket
        self.prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
        # Buckets behind a custom endpoint (MinIO and the like) are addressed by path,
        # since their names are rarely set up as DNS names; AWS itself picks for itself.
        config = Config(
            signature_version="s3v4",
            s3={"addressing_style": "path" if endpoint_url else "auto"},
            retries={"max_attempts": 3, "mode": "standard"},
            connect_timeout=5,
            read_timeout=30,
        )
        self.client = boto3.client("s3", endpoint_url=endpoint_url or None, region_name=region or None, config=config)
        if public_endpoint_url and public_endpoint_url != endpoint_url:
            # Signing is local computation: this client never sends a request.
            self.signer = boto3.client(
                "s3", endpoint_url=public_endpoint_url, region_name=region or None, config=config
            )
        else:
            self.signer = self.client

    def _key(self, key: str) -> str:
        return self.prefix + _check_key(key)

    @staticmethod
    def _missing(error) -> bool:
        code = str(error.response.get("Error", {}).get("Code", ""))
        return code in {"404", "NoSuchKey", "NotFound"}

    def put(self, key: str, data: bytes | os.PathLike | str, content_type: str) -> StoredObject:
        if isinstance(data, (bytes, bytearray, memoryview)):
            body = bytes(data)
            response = self.client.put_object(
                Bucket=self.bucket, Key=self._key(key), Body=body, ContentType=content_type
            )
            size = len(body)
        else:
            size = os.path.getsize(data)
            with open(data, "rb") as source:
                response = self.client.put_object(
                    Bucket=self.bucket, Key=self._key(key), Body=source, ContentType=content_type,
                    ContentLength=size,
                )
        # A PUT replaces the whole object at once: a redelivered job overwrites its
        # earlier attempt's assets, and readers see either the old or the new one.
        return StoredObject(key, size, response["ETag"], content_type)

    def get(self, key: str) -> bytes:
        from botocore.exceptions import ClientError

        try:
            response = self.client.get_object(Bucket=self.bucket, Key=self._key(key))
        except ClientError as error:
            if self._missing(error):
                raise FileNotFoundError(key) from None
            raise
        with response["Body"] as body:
            return body.read()

    def stat(self, key: str) -> StoredObject | None:
        from botocore.exceptions import ClientError

        try:
            head = self.client.head_object(Bucket=self.bucket, Key=self._key(key))
        except ClientError as error:
            if self._missing(error):
                return None
            raise
        return StoredObject(
            key, head["ContentLength"], head["ETag"], head.get("ContentType", "application/octet-stream")
        )

    def open_range(self, key: str, start: int = 0, end: int | None = None) -> Iterator[bytes]:
        from botocore.exceptions import ClientError

        request = {"Bucket": self.bucket, "Key": self._key(key)}
        if start or end is not None:
            request["Range"] = f"bytes={start}-{'' if end is None else end}"
        try:
            # Requested now, so that a missing key fails before a response starts streaming.
            body = self.client.get_object(**request)["Body"]
        except ClientError as error:
            if self._missing(error):
                raise FileNotFoundError(key) from None
            raise

        def chunks() -> Iterator[bytes]:
            with body:
                yield from body.iter_chunks(CHUNK_BYTES)

        return chunks()

    def exists(self, key: str) -> bool:
        return self.stat(key) is not None

    def size(self, key: str) -> int:
        stored = self.stat(key)
        if stored is None:
            raise FileNotFoundError(key)
        return stored.size

    def etag(self, key: str) -> str:
        stored = self.stat(key)
        if stored is None:
            raise FileNotFoundError(key)
        return stored.etag

    def delete(self, key: str) -> None:
        self.client.delete_object(Bucket=self.bucket, Key=self._key(key))

    def delete_prefix(self, prefix: str) -> int:
        full_prefix = self._key(prefix.rstrip("/")) + "/"
        deleted = 0
        pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=full_prefix)
        batch: list[dict] = []
        for page in pages:
            for item in page.get("Contents", []):
                batch.append({"Key": item["Key"]})
                if len(batch) == S3_DELETE_BATCH:
                    deleted += self._delete_batch(batch)
                    batch = []
        if batch:
            deleted += self._delete_batch(batch)
        return deleted

    def _delete_batch(self, batch: list[dict]) -> int:
        response = self.client.delete_objects(Bucket=self.bucket, Delete={"Objects": batch, "Quiet": True})
        errors = response.get("Errors", [])
        if errors:
            first = errors[0]
            raise OSError(f"S3 refused to delete {len(errors)} object(s), e.g. {first.get('Key')}: {first.get('Message')}")
        return len(batch)

    def presigned_url(self, key: str, expires_in: int) -> str | None:
        if not 1 <= expires_in <= S3_MAX_PRESIGN_SECONDS:
            raise ValueError(f"expires_in must be between 1 and {S3_MAX_PRESIGN_SECONDS} seconds, got {expires_in}")
        return self.signer.generate_presigned_url(
            "get_object", Params={"Bucket": self.bucket, "Key": self._key(key)}, ExpiresIn=expires_in
        )


def make_storage(settings) -> Storage:
    if settings.storage == "local":
        return LocalStorage(settings.assets_dir)
    if settings.storage == "s3":
        return S3Storage(
            bucket=settings.s3_bucket,
            prefix=settings.s3_prefix,
            endpoint_url=settings.s3_endpoint_url,
            region=settings.s3_region,
            public_endpoint_url=settings.s3_public_endpoint_url,
        )
    raise ValueError(f"storage backend {settings.storage!r} is not available (known: local, s3)")
