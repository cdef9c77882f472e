"""Fixtures of the Promidata tests: the sandbox on loopback, resources pointed at it."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from sync_pipeline.core.crypto import generate_key
from sync_pipeline.core.resources import AppDatabaseResource
from sync_pipeline.core.sync_runner import RunContext
from sync_pipeline.defs.promidata.resources import PromidataResource
from sync_pipeline.defs.promidata.storage import PromidataImageStorage
from sync_pipeline.defs.promidata.sync import Limits, add_supplier, sync_supplier_direct
from sync_pipeline.sandbox.promidata import (
    PromidataSandboxConfig,
    PromidataSandboxState,
    create_app,
)
from sync_pipeline.sandbox.server import SandboxServer


@dataclass
class Promidata:
    """A running Promidata sandbox, a client on its control routes, and synced resources."""

    state: PromidataSandboxState
    url: str
    client: httpx.Client
    db_url: str
    api: PromidataResource
    storage: PromidataImageStorage
    images_dir: Path
    limits: Limits = field(default_factory=Limits)

    def control(self, path: str, body: dict[str, Any] | None = None) -> Any:
        """POST a control route; its JSON."""
        response = self.client.post(f"/_sandbox{path}", json=body or {})
        assert response.status_code == 200, response.text
        return response.json()

    def fault(self, kind: str, path_contains: str, count: int = 1, delay: float = 0.0) -> None:
        """Inject a sandbox fault."""
        self.control(
            "/faults",
            {"kind": kind, "path_contains": path_contains, "count": count, "delay": delay},
        )

    def expected(self, supplier: str) -> dict[str, Any]:
        """What the sandbox says a complete sync stores."""
        return dict(self.client.get(f"/_sandbox/suppliers/{supplier}/expected").json())

    def sync(self, supplier: str, owner: str | None = None) -> dict[str, Any]:
        """All three stages in this process."""
        ctx = RunContext(owner=owner or f"test-{uuid.uuid4().hex[:8]}")
        return sync_supplier_direct(
            self.api, self.storage, self.db_url, supplier, ctx, limits=self.limits
        )

    def requests(self) -> dict[str, int]:
        """Requests the sandbox served since the last reset; then reset."""
        stats = dict(self.state.stats())
        self.state.reset_stats()
        return stats


@pytest.fixture
def promidata(db_url: str, tmp_path: Path) -> Iterator[Promidata]:
    """Sandbox with suppliers A23 (6 families), A360 (4), D170 (3), all configured."""
    state = PromidataSandboxState(PromidataSandboxConfig(seed=11))
    with (
        SandboxServer(create_app(state)) as server,
        httpx.Client(base_url=server.url, timeout=10) as client,
    ):
        api = PromidataResource(
            app_db=AppDatabaseResource(url=db_url, token_key=generate_key()),
            base_url=server.url,
            timeout_seconds=5.0,
            connect_timeout_seconds=2.0,
            transient_retries=2,
        )
        storage = PromidataImageStorage(directory=str(tmp_path / "images"))
        for code in state.codes():
            add_supplier(db_url, code)
        yield Promidata(state, server.url, client, db_url, api, storage, tmp_path / "images")
        api.close()
