"""Fixtures shared by the sandbox tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from sync_pipeline_tests.serving import SlotServer


@pytest.fixture(scope="module")
def served() -> Iterator[SlotServer]:
    """The module's loopback server; each test plugs its fresh sandbox app into it."""
    with SlotServer() as running:
        yield running
