"""The one client of the object store: S3 protocol through boto3, errors turned into reasons.

Why a module of its own: boto3 is large and slow to import (it is imported here only, and only
when a backup is configured), and its errors are many; the shipper, the status and
``consortiumctl`` need a handful of named reasons (``StoreError.reason``) that say what a user
must fix. Compatibility choices, for S3-compatible stores (MinIO, Ceph RGW, GCS's XML API) as
well as AWS: path-style addressing unless the endpoint is AWS, ``Content-MD5`` on every PUT (the
store refuses a body that arrived damaged) instead of the newer streaming checksums, which
several compatible stores refuse.

Append-only writes: ``put_new`` never overwrites. It asks the store first (HEAD); an existing
key with the same bytes counts as done (a resumed upload), other bytes are ``ObjectConflict``.
A PUT is atomic in S3: an interrupted upload leaves no object, so nothing torn is ever visible.
"""

from __future__ import annotations

import base64
import hashlib
import threading
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

REASONS = (
    "CredentialsMissing",
    "EndpointUnreachable",
    "InvalidCredentials",
    "AccessDenied",
    "BucketNotFound",
    "BucketOwnedByAnotherConsortium",
    "ObjectConflict",
    "HistoryNotHeld",
    "UploadFailed",
)
_CREDENTIAL_CODES = {"InvalidAccessKeyId", "SignatureDoesNotMatch", "InvalidToken", "ExpiredToken"}
_DENIED_CODES = {"AccessDenied", "AllAccessDisabled", "AccountProblem", "403", "Forbidden"}
_BUCKET_CODES = {"NoSuchBucket"}
_MISSING_CODES = {"NoSuchKey", "404", "NotFound"}


class StoreError(Exception):
    """The store refused or could not be reached; ``reason`` is one of ``REASONS``."""

    def __init__(self, reason: str, detail: str) -> None:
        assert reason in REASONS, reason
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class StoreSettings:
    endpoint: str
    bucket: str
    prefix: str
    region: str
    access_key_id: str
    secret_access_key: str
    ca_file: str | None = None
    connect_timeout: float = 5.0
    read_timeout: float = 30.0

    @property
    def location(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}"


class S3Store:
    """Keys are relative to ``settings.prefix``. Thread-safe (one boto3 client, locked)."""

    def __init__(self, settings: StoreSettings) -> None:
        import boto3  # noqa: PLC0415 - imported only when a backup is configured
        from botocore.config import Config  # noqa: PLC0415

        self.settings = settings
        host = urlsplit(settings.endpoint).hostname or ""
        config = Config(
            region_name=settings.region,
            connect_timeout=settings.connect_timeout,
            read_timeout=settings.read_timeout,
            retries={"max_attempts": 3, "mode": "standard"},
            s3={"addressing_style": "auto" if host.endswith("amazonaws.com") else "path"},
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
        )
        self._client: Any = boto3.session.Session().client(
            "s3",
            endpoint_url=settings.endpoint,
            aws_access_key_id=settings.access_key_id,
            aws_secret_access_key=settings.secret_access_key,
            verify=settings.ca_file if settings.ca_file else True,
            config=config,
        )
        self._lock = threading.Lock()

    def _key(self, key: str) -> str:
        return self.settings.prefix + key

    def _call(self, what: str, key: str, method: str, **kwargs: Any) -> Any:
        from botocore.exceptions import (  # noqa: PLC0415
            BotoCoreError,
            ClientError,
            EndpointConnectionError,
            NoCredentialsError,
        )

        try:
            with self._lock:
                return getattr(self._client, method)(Bucket=self.settings.bucket, **kwargs)
        except ClientError as exc:
            error = exc.response.get("Error", {})
            code = str(error.get("Code", ""))
            message = str(error.get("Message", "") or code)
            where = f"{what} {self.settings.location}{key}"
            if code in _MISSING_CODES and key:
                raise KeyError(key) from exc
            if code in _BUCKET_CODES or (code in _MISSING_CODES and not key):
                raise StoreError(
                    "BucketNotFound", f"bucket {self.settings.bucket!r} does not exist"
                ) from exc
            if code in _CREDENTIAL_CODES:
                raise StoreError("InvalidCredentials", f"{where}: {code}: {message}") from exc
            if code in _DENIED_CODES:
                raise StoreError("AccessDenied", f"{where}: {code}: {message}") from exc
            raise StoreError("UploadFailed", f"{where}: {code}: {message}") from exc
        except NoCredentialsError as exc:
            raise StoreError("CredentialsMissing", str(exc)) from exc
        except EndpointConnectionError as exc:
            raise StoreError("EndpointUnreachable", f"{self.settings.endpoint}: {exc}") from exc
        except BotoCoreError as exc:  # timeouts, TLS failures, connection resets
            raise StoreError("EndpointUnreachable", f"{self.settings.endpoint}: {exc}") from exc

    # ------------------------------------------------------------------------ reads
    def check_bucket(self) -> None:
        """Reach the endpoint, authenticate and find the bucket, or StoreError saying which.

        A one-key listing rather than HEAD: an answer to HEAD has no body, so a wrong secret
        and a missing permission both arrive as a bare 403 (``AccessDenied``); a listing's
        error names the cause (``SignatureDoesNotMatch``, ``InvalidAccessKeyId``...)."""
        self._call("reading", "", "list_objects_v2", Prefix=self.settings.prefix, MaxKeys=1)

    def keys(self, sub: str) -> list[str]:
        """Every key under ``sub`` (relative, sorted)."""
        return [key for key, _ in self.keys_with_times(sub)]

    def keys_with_times(self, sub: str) -> list[tuple[str, datetime]]:
        found: list[tuple[str, datetime]] = []
        token: str | None = None
        cut = len(self.settings.prefix)
        while True:
            extra = {"ContinuationToken": token} if token else {}
            page = self._call("listing", sub, "list_objects_v2", Prefix=self._key(sub), **extra)
            found += [
                (item["Key"][cut:], item["LastModified"]) for item in page.get("Contents", [])
            ]
            if not page.get("IsTruncated"):
                return sorted(found)
            token = page["NextContinuationToken"]

    def get(self, key: str) -> bytes:
        """The object's bytes; KeyError if there is none."""
        reply = self._call("reading", key, "get_object", Key=self._key(key))
        body = reply["Body"]
        try:
            return bytes(body.read())
        finally:
            body.close()

    def exists(self, key: str) -> bool:
        try:
            self._call("reading", key, "head_object", Key=self._key(key))
        except KeyError:
            return False
        return True

    # ------------------------------------------------------------------------ writes
    def put_new(
        self, key: str, data: bytes, content_type: str = "application/octet-stream"
    ) -> bool:
        """Upload ``data`` under a key that must not hold other bytes; True if uploaded, False if
        the same bytes were already there. StoreError(ObjectConflict) if other bytes are."""
        if self.exists(key):
            held = self.get(key)
            if held != data:
                raise StoreError(
                    "ObjectConflict",
                    f"{self.settings.location}{key} exists with other bytes "
                    f"(sha256 {hashlib.sha256(held).hexdigest()[:16]}, {len(held)} bytes); "
                    "it is never overwritten",
                )
            return False
        md5 = base64.b64encode(hashlib.md5(data, usedforsecurity=False).digest()).decode()
        self._call(
            "uploading",
            key,
            "put_object",
            Key=self._key(key),
            Body=data,
            ContentMD5=md5,
            ContentType=content_type,
            Metadata={"sha256": hashlib.sha256(data).hexdigest()},
        )
        return True

    def delete(self, keys: list[str]) -> None:
        for start in range(0, len(keys), 1000):
            batch = [{"Key": self._key(k)} for k in keys[start : start + 1000]]
            self._call("deleting", "", "delete_objects", Delete={"Objects": batch, "Quiet": True})
