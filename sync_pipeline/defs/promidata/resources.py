"""Promidata's static catalog host as a resource: conditional Import.txt, JSON, images.

Promidata serves files, not an API: no OAuth, no rate headers. What this adds to the shared
HTTP base (`core.client.HttpResource`: one session, timeouts, 5xx/timeout retries honouring
Retry-After) is the conditional GET of Import.txt and per-item deadlines (family 5 min,
image 2 min, as the seed's BullMQ job timeouts).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import Field

from sync_pipeline.core.client import HttpResource, body_text
from sync_pipeline.core.errors import NotFoundError, PermanentError, TransientError
from sync_pipeline.core.http import CallStats
from sync_pipeline.core.resources import AppDatabaseResource
from sync_pipeline.core.settings import Env

DEFAULT_BASE_URL = "https://promi-dl.de/Profiles/Live"


@dataclass(frozen=True)
class ImportTxt:
    """Import.txt as fetched: None text when unchanged (304)."""

    text: str | None
    etag: str | None
    last_modified: str | None

    @property
    def unchanged(self) -> bool:
        """The server answered 304 Not Modified."""
        return self.text is None


class PromidataResource(HttpResource):
    """Promidata catalog files of a profile: per supplier Import.txt, product JSON, images."""

    app_db: AppDatabaseResource
    base_url: str = Field(
        default=DEFAULT_BASE_URL,
        description="Profile URL (https://promi-dl.de/Profiles/Live/<profile id>) or a sandbox.",
    )
    timeout_seconds: float = 60.0
    family_timeout_seconds: float = Field(
        default=300.0, description="Per family, retries included."
    )
    image_timeout_seconds: float = Field(default=120.0, description="Per image, retries included.")
    supplier_timeout_seconds: float = Field(
        default=1800.0, description="Per stage of one supplier; the next run continues."
    )
    family_concurrency: int = Field(default=3, ge=1, description="Families in flight at once.")
    image_concurrency: int = Field(default=10, ge=1, description="Image transfers in flight.")
    max_inline_wait_seconds: float = Field(
        default=20.0,
        description="Longest wait in-process for a reset; Promidata has no rate windows, so "
        "its syncs never park (the shared parked sensor reads this of every source).",
    )
    max_attempts: int = Field(
        default=3, ge=1, description="Runs that retry a failing family/image before it is dead."
    )

    def _get(
        self,
        url: str,
        what: str,
        stats: CallStats | None,
        deadline: float | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, bytes, dict[str, str]]:
        response = self.http().request("GET", url, stats=stats, headers=headers, deadline=deadline)
        if response.status_code == 304:
            if stats is not None:
                stats.add(not_modified=1)
            return 304, b"", dict(response.headers)
        if response.status_code == 200:
            return 200, response.content, dict(response.headers)
        message = f"promidata {what}: HTTP {response.status_code} {body_text(response, 200)}"
        if response.status_code in (404, 410):
            raise NotFoundError(message)
        if response.status_code == 429:
            raise TransientError(message)
        raise PermanentError(message)

    def import_txt(self, supplier: str, etag: str | None, stats: CallStats) -> ImportTxt:
        """GET ``<supplier>/Import/Import.txt``, conditional on the stored ETag."""
        headers = {"If-None-Match": etag} if etag else None
        status, body, got = self._get(
            f"{self.base_url.rstrip('/')}/{supplier}/Import/Import.txt",
            f"{supplier} Import.txt",
            stats,
            headers=headers,
        )
        if status == 304:
            return ImportTxt(None, etag, got.get("last-modified"))
        return ImportTxt(body.decode("utf-8", "replace"), got.get("etag"), got.get("last-modified"))

    def fetch(self, url: str, what: str, stats: CallStats, timeout: float) -> tuple[bytes, str]:
        """GET a catalog file by absolute URL within `timeout` seconds; bytes, content type."""
        _, body, headers = self._get(url, what, stats, deadline=time.monotonic() + timeout)
        return body, headers.get("content-type", "")

    def family_json(self, url: str, sku: str, stats: CallStats) -> bytes:
        """One product family's JSON (family deadline)."""
        return self.fetch(url, f"family {sku}", stats, self.family_timeout_seconds)[0]

    def image(self, url: str, stats: CallStats) -> tuple[bytes, str]:
        """One image (image deadline)."""
        return self.fetch(url, f"image {url.rsplit('/', 1)[-1]}", stats, self.image_timeout_seconds)


def promidata_resource(app_db: AppDatabaseResource, read: Env) -> PromidataResource:
    """The resource of the registry: PROMIDATA_BASE_URL (an EnvVar in the code location);
    the CLI also reads the optional `PROMIDATA_*` limits when set."""
    if read.values is None:
        return PromidataResource(app_db=app_db, base_url=read("PROMIDATA_BASE_URL"))
    return promidata_from_env(app_db, read.values)


def promidata_from_env(app_db: AppDatabaseResource, env: Mapping[str, str]) -> PromidataResource:
    """The resource configured from `PROMIDATA_*` variables (defaults for unset ones)."""
    fields: dict[str, Any] = {"app_db": app_db}
    for name, var, cast in (
        ("base_url", "PROMIDATA_BASE_URL", str),
        ("family_concurrency", "PROMIDATA_FAMILY_CONCURRENCY", int),
        ("image_concurrency", "PROMIDATA_IMAGE_CONCURRENCY", int),
        ("supplier_timeout_seconds", "PROMIDATA_SUPPLIER_TIMEOUT_SECONDS", float),
        ("family_timeout_seconds", "PROMIDATA_FAMILY_TIMEOUT_SECONDS", float),
        ("image_timeout_seconds", "PROMIDATA_IMAGE_TIMEOUT_SECONDS", float),
    ):
        if env.get(var):
            fields[name] = cast(env[var])
    return PromidataResource(**fields)
