"""Where product images go: a local directory by default, any S3-compatible store by config.

Keys are content-addressed (``<prefix><first 2 hex>/<SHA-256>``), so an image shared by many
variants, families or suppliers is stored once; an image already in the store is found with
a lookup (``stat`` / ``HeadObject``) and S3 puts are conditional (``If-None-Match: *``), so
nothing is uploaded twice even when two runs race. Bytes that are not an image, or too large,
are rejected before anything is written.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

import dagster as dg
from pydantic import Field, PrivateAttr

from sync_pipeline.core.errors import PermanentError, TransientError

_MAGIC = (
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"GIF87a", "image/gif"),
    (b"GIF89a", "image/gif"),
)


class ImageRejectedError(PermanentError):
    """The bytes are not an acceptable image (not an image, too large, wrong content)."""

    error_class = "bad_image"


def sniff_image(data: bytes) -> str:
    """The image type the bytes start with; ImageRejectedError when they are no image."""
    for magic, content_type in _MAGIC:
        if data.startswith(magic):
            return content_type
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    head = data[:40].decode("latin-1", "replace").replace("\n", " ")
    raise ImageRejectedError(f"not an image ({len(data)} bytes starting {head!r})")


class ImageStore(Protocol):
    """A content-addressed blob store."""

    def exists(self, key: str) -> bool:
        """Whether the key is stored."""
        ...

    def put(self, key: str, data: bytes, content_type: str) -> bool:
        """Store unless present; True when this call wrote it."""
        ...


class DirectoryStore:
    """Images as files under a directory (written atomically: temp file, then rename)."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def _path(self, key: str) -> Path:
        path = (self.root / key).resolve()
        if self.root.resolve() not in path.parents:
            raise ValueError(f"key escapes the store: {key!r}")
        return path

    def exists(self, key: str) -> bool:
        """Whether the file exists."""
        return self._path(key).is_file()

    def put(self, key: str, data: bytes, content_type: str) -> bool:
        """Write the file unless it exists."""
        path = self._path(key)
        if path.is_file():
            return False
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".upload-")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return True


class S3Store:
    """Images as objects of an S3-compatible bucket (AWS S3, Cloudflare R2, MinIO)."""

    def __init__(self, client: Any, bucket: str) -> None:
        self.client = client
        self.bucket = bucket

    def exists(self, key: str) -> bool:
        """HeadObject: found or not (other errors are transient)."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self.client.head_object(Bucket=self.bucket, Key=key)
            return True
        except ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", ""))
            if code in ("404", "NoSuchKey", "NotFound"):
                return False
            raise TransientError(f"S3 HeadObject {key}: {code}") from exc
        except BotoCoreError as exc:
            raise TransientError(f"S3 HeadObject {key}: {exc}") from exc

    def put(self, key: str, data: bytes, content_type: str) -> bool:
        """Conditional PutObject (If-None-Match: *): False when the key already existed."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self.client.put_object(
                Bucket=self.bucket,
                Key=key,
                Body=data,
                ContentType=content_type,
                IfNoneMatch="*",
            )
            return True
        except ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", ""))
            if code in ("PreconditionFailed", "412", "ConditionalRequestConflict"):
                return False
            raise TransientError(f"S3 PutObject {key}: {code}") from exc
        except BotoCoreError as exc:
            raise TransientError(f"S3 PutObject {key}: {exc}") from exc


class PromidataImageStorage(dg.ConfigurableResource):
    """Image storage: `directory` (default) or an S3 `bucket` (settings `s3_*`)."""

    directory: str = Field(
        default=".sync_home/promidata-images",
        description="Local directory of images (used when no bucket is set).",
    )
    bucket: str = Field(default="", description="S3 bucket; set it to store in S3/R2/MinIO.")
    prefix: str = Field(default="promidata/images/", description="Key prefix in the store.")
    max_image_bytes: int = Field(default=10_000_000, description="Larger images are rejected.")
    # S3 client settings, flat rather than a nested `S3Resource`: importing dagster-aws costs
    # every process that loads the code ~50 MB and ~0.5 s of CPU, so it is imported only
    # when a bucket is configured (see `s3_client`).
    s3_endpoint_url: str = Field(default="", description="S3 endpoint (R2/MinIO); empty: AWS.")
    s3_region_name: str = Field(default="", description="S3 region; empty: boto3's default.")
    s3_access_key_id: str = Field(default="", description="S3 key id; empty: boto3's chain.")
    s3_secret_access_key: str = Field(default="", description="S3 secret (bind an EnvVar).")

    _store: ImageStore | None = PrivateAttr(default=None)

    def s3_client(self) -> Any:
        """A boto3 S3 client through dagster-aws's `S3Resource`, with the settings above."""
        from dagster_aws.s3 import S3Resource

        return S3Resource(
            endpoint_url=self.s3_endpoint_url or None,
            region_name=self.s3_region_name or None,
            aws_access_key_id=self.s3_access_key_id or None,
            aws_secret_access_key=self.s3_secret_access_key or None,
        ).get_client()

    def store(self) -> ImageStore:
        """The configured store (built once)."""
        if self._store is None:
            if self.bucket:
                self._store = S3Store(self.s3_client(), self.bucket)
            else:
                self._store = DirectoryStore(Path(self.directory))
        return self._store

    def key(self, sha256: str) -> str:
        """Content-addressed key of an image."""
        return f"{self.prefix}{sha256[:2]}/{sha256}"

    def check(self, data: bytes) -> str:
        """The image's content type; ImageRejectedError when not an image or too large."""
        if len(data) > self.max_image_bytes:
            raise ImageRejectedError(
                f"image of {len(data)} bytes is larger than max_image_bytes={self.max_image_bytes}"
            )
        return sniff_image(data)


def storage_from_env(env: Mapping[str, str], home: str) -> PromidataImageStorage:
    """Image storage from `PROMIDATA_IMAGES_DIR` or `PROMIDATA_S3_*` (secrets as EnvVar)."""
    bucket = env.get("PROMIDATA_S3_BUCKET", "")
    if not bucket:
        return PromidataImageStorage(
            directory=env.get("PROMIDATA_IMAGES_DIR") or f"{home}/promidata-images"
        )
    s3: dict[str, Any] = {}
    if env.get("PROMIDATA_S3_ENDPOINT_URL"):
        s3["s3_endpoint_url"] = env["PROMIDATA_S3_ENDPOINT_URL"]
    if env.get("PROMIDATA_S3_REGION"):
        s3["s3_region_name"] = env["PROMIDATA_S3_REGION"]
    for name, var in (
        ("s3_access_key_id", "PROMIDATA_S3_ACCESS_KEY_ID"),
        ("s3_secret_access_key", "PROMIDATA_S3_SECRET_ACCESS_KEY"),
    ):
        if env.get(var):
            s3[name] = dg.EnvVar(var)  # resolved at run time, never shown in run config
    return PromidataImageStorage(
        bucket=bucket, prefix=env.get("PROMIDATA_S3_PREFIX", "promidata/images/"), **s3
    )
