"""Waiting in tests: poll a real condition or a starting server until a deadline, then fail.

Also the one loopback server a test module plugs its fresh sandbox apps into.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from types import TracebackType
from typing import Any, TypeVar

import httpx
import pytest

from sync_pipeline.sandbox.server import AppSlot, SandboxServer

T = TypeVar("T")


def wait_until(
    condition: Callable[[], T | None],
    timeout: float,
    *,
    what: str = "condition",
    interval: float = 0.05,
) -> T:
    """Poll ``condition`` until it returns a truthy value and return it; fail at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: not within {timeout:g} s")
        time.sleep(interval)  # between polls of a real condition, bounded by the deadline


def wait_for_server(
    url: str,
    proc: subprocess.Popen[Any] | None,
    timeout: float,
    *,
    what: str = "the server",
    ready: Callable[[httpx.Response], bool] = lambda response: response.status_code == 200,
) -> httpx.Response:
    """Poll ``GET url`` until ``ready`` holds; fail when ``proc`` exits first or at the deadline."""

    def probe() -> httpx.Response | None:
        try:
            response: httpx.Response | None = httpx.get(url, timeout=2)
        except httpx.HTTPError:
            response = None
        if response is not None and ready(response):
            return response
        if proc is not None and proc.poll() is not None:
            pytest.fail(f"{what} exited with {proc.returncode} before serving {url}")
        return None

    return wait_until(probe, timeout, what=f"{what} at {url}", interval=0.1)


class SlotServer:
    """One loopback server for a test module; each test plugs a fresh sandbox app into it."""

    def __init__(self) -> None:
        self.slot = AppSlot()
        self.server = SandboxServer(self.slot)
        self._clients: list[httpx.Client] = []

    def plug(self, app: Any) -> httpx.Client:
        """Serve ``app`` from now on and return an HTTP client pointed at it."""
        self.slot.app = app
        client = httpx.Client(base_url=self.server.url, timeout=10.0)
        self._clients.append(client)
        return client

    def unplug(self) -> None:
        """Close the clients handed out and remove the app (end of a test)."""
        for client in self._clients:
            client.close()
        self._clients.clear()
        self.slot.app = None

    def __enter__(self) -> SlotServer:
        self.server.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.unplug()
        self.server.stop()
