"""Local imitation of Promidata's supplier catalog files (Import.txt, product JSON, images)."""

from sync_pipeline.sandbox.promidata.app import create_app
from sync_pipeline.sandbox.promidata.state import (
    PROMIDATA_FAULT_KINDS,
    PromidataSandboxConfig,
    PromidataSandboxState,
)

__all__ = [
    "PROMIDATA_FAULT_KINDS",
    "PromidataSandboxConfig",
    "PromidataSandboxState",
    "create_app",
]
