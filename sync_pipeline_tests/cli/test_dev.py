"""`sync-pipeline dev` (cli/dev.py): what it keeps out of the demo's log."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from sync_pipeline.cli.dev import DAGSTER_WARNING_FILTERS


@pytest.mark.parametrize(
    ("message", "category"),
    [
        (
            "Parameter `owners` of initializer `SensorDefinition.__init__` is currently in beta, "
            "and may have breaking changes in minor version releases.",
            "BetaWarning",
        ),
        ("Function `dev_command` is superseded and its usage is discouraged.", "Warning"),
    ],
    ids=["owners-beta", "dev-superseded"],
)
def test_dev_silences_dagsters_warnings_about_itself(message: str, category: str) -> None:
    code = (
        "import warnings, dagster\n"
        f"warnings.warn({message!r}, getattr(dagster, {category!r}, Warning))\n"
        "warnings.warn('a warning of our own')\n"
    )
    env = {**os.environ, "PYTHONWARNINGS": DAGSTER_WARNING_FILTERS}

    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120
    )

    assert done.returncode == 0, done.stderr
    assert message.split(",")[0] not in done.stderr
    assert "UserWarning: a warning of our own" in done.stderr
