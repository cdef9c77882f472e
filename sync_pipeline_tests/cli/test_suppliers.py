"""`sync-pipeline suppliers` and `sync promidata` (cli/suppliers.py) against the sandbox."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sync_pipeline.core import priorities
from sync_pipeline.sandbox.promidata import PromidataSandboxState
from sync_pipeline_tests.cli.conftest import CliEnv, error_of, invoke
from sync_pipeline_tests.cli.test_main import runs


def test_suppliers_add_list_remove(cli_env: CliEnv) -> None:
    assert "no suppliers" in invoke("suppliers", "list").stdout
    assert invoke("suppliers", "add", "A23", "B7").stdout == (
        "added supplier A23\nadded supplier B7\n"
    )
    assert "already configured" in invoke("suppliers", "add", "A23").stdout
    listed = json.loads(invoke("suppliers", "list", "--json").stdout)
    assert [r["code"] for r in listed] == ["A23", "B7"]
    assert invoke("suppliers", "remove", "B7").stdout == "removed supplier B7\n"
    assert "not configured" in error_of(invoke("suppliers", "remove", "B7", exit_code=1))
    assert "alphanumeric" in error_of(invoke("suppliers", "add", "a/b", exit_code=1))


def test_direct_sync_prints_the_seed_result_and_status_shows_it(
    promidata_env: PromidataSandboxState,
) -> None:
    invoke("suppliers", "add", "A23", "B7")
    out = invoke("sync", "promidata", "--supplier", "A23", "--direct").stdout
    result = json.loads(out)
    assert result["mode"] == "direct" and result["suppliersProcessed"] == 1
    [a23] = result["results"]
    assert a23["productsProcessed"] == 4 and a23["errors"] == 0 and a23["skipped"] == 0
    assert a23["duration"].endswith("s")
    again = json.loads(invoke("sync", "promidata", "--all", "--direct").stdout)
    by_code = {r["supplier"]: r for r in again["results"]}
    assert by_code["A23"]["productsProcessed"] == 0 and by_code["A23"]["skipped"] == 4
    assert by_code["B7"]["productsProcessed"] == 2
    status = json.loads(invoke("suppliers", "status", "--json").stdout)
    assert status["stages"]["images"] == {"waiting": 0, "active": 0, "completed": 2, "failed": 0}
    assert status["suppliers"]["A23"]["percent"] == 100.0
    text = invoke("suppliers", "status").stdout
    assert "catalog: waiting 0, active 0, completed 2, failed 0" in text


def test_failures_are_listed_and_redriven(promidata_env: PromidataSandboxState) -> None:
    invoke("suppliers", "add", "B7")
    sku = "B7-100000"
    promidata_env.poison_family("B7", sku, "unknown_language")
    out = json.loads(invoke("sync", "promidata", "--supplier", "B7", "--direct").stdout)
    assert out["results"][0]["errors"] == 1
    listed = invoke("suppliers", "failures", "--dead").stdout
    assert f"B7/family {sku}: bad_data (dead" in listed and "unknown language 'xx'" in listed
    promidata_env.poison_family("B7", sku, None)
    assert "1 failure(s)" in invoke("suppliers", "redrive", "--supplier", "B7").stdout
    healed = json.loads(invoke("sync", "promidata", "--supplier", "B7", "--direct").stdout)
    assert healed["results"][0]["productsProcessed"] == 1
    assert invoke("suppliers", "failures").stdout == "no failures\n"


def test_sync_promidata_usage_errors(cli_env: CliEnv) -> None:
    assert "--supplier" in error_of(invoke("sync", "promidata", exit_code=2))
    assert "not configured: X1" in error_of(
        invoke("sync", "promidata", "--supplier", "X1", exit_code=1)
    )


def test_queueing_prints_the_run_id(
    cli_env: CliEnv, launchable: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PROMIDATA_BASE_URL", "http://127.0.0.1:9")  # bound when the run starts
    invoke("suppliers", "add", "A23")
    out = invoke("sync", "promidata", "--supplier", "A23").stdout
    assert out.startswith("queued run ") and "promidata_supplier_sync" in out


def test_sandbox_command_serves_until_sigterm(cli_env: CliEnv) -> None:
    import os
    import signal
    import subprocess
    import sys
    import time

    import httpx

    from sync_pipeline_tests.cli.conftest import free_port

    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "sync_pipeline.cli.main",
            "suppliers",
            "sandbox",
            "--port",
            str(port),
            "--families",
            "2",
            "--configure",
        ],
        stdout=subprocess.PIPE,
        text=True,
        env=dict(os.environ),
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()  # printed once the server accepts connections
        assert f"127.0.0.1:{port}" in line
        body = httpx.get(f"http://127.0.0.1:{port}/A23/Import/Import.txt", timeout=10).text
        assert body.count(".json|") == 2
        assert "A360" in invoke("suppliers", "list").stdout
    finally:
        proc.send_signal(signal.SIGTERM)
        started = time.monotonic()
        code = proc.wait(30)
        if proc.stdout is not None:
            proc.stdout.close()
        assert code == 0 and time.monotonic() - started < 30


def test_dead_families_and_images_are_dead_letters_redriven_one_by_one(
    promidata_env: PromidataSandboxState, cli_env: CliEnv, launchable: Path
) -> None:
    invoke("suppliers", "add", "B7")
    sku = "B7-100000"
    promidata_env.poison_family("B7", sku, "missing_field")
    sha = sorted(promidata_env.expected("B7")["images"])[0]
    promidata_env.faults.inject("not_image", path_contains=sha)
    out = json.loads(invoke("sync", "promidata", "--supplier", "B7", "--direct").stdout)
    assert out["results"][0]["errors"] == 2

    rows = json.loads(invoke("dead-letters", "list", "--source", "promidata", "--json").stdout)
    by_key = {r["key"]: r for r in rows}
    family, image = f"B7/family/{sku}", f"B7/image/{sha}"
    assert set(by_key) == {family, image}
    assert {k: by_key[family][k] for k in ("source", "partition", "stage", "item")} == {
        "source": "promidata",
        "partition": "B7",
        "stage": "products",
        "item": sku,
    }
    assert (by_key[family]["error_class"], by_key[family]["attempts"]) == ("bad_data", 1)
    assert (by_key[image]["stage"], by_key[image]["error_class"]) == ("images", "bad_image")
    assert by_key[image]["last_failure_at"] and by_key[image]["run_id"] is None
    text = invoke("dead-letters", "list").stdout
    assert f"promidata/B7 products family {sku}: bad_data after 1 attempt(s), last " in text
    assert f"promidata/B7 images image {sha}: bad_image after 1 attempt(s), last " in text

    unknown = invoke(
        "dead-letters", "redrive", "--source", "promidata", "--key", "B7/family/NOPE", exit_code=1
    )
    assert "B7/family/NOPE not a dead letter" in error_of(unknown)
    assert runs(cli_env.dagster_home) == []

    out_text = invoke("dead-letters", "redrive", "--source", "promidata", "--key", family).stdout
    assert out_text.endswith(f"redriving 1 dead item(s): {family}\n")
    [run] = runs(cli_env.dagster_home)
    assert (run.job_name, run.tags["dagster/partition"]) == ("promidata_supplier_sync", "B7")
    assert run.tags[priorities.TRIGGER_TAG] == "redrive"
    # Only the redriven family left the dead letters; the supplier's next sync retries it.
    left = json.loads(invoke("dead-letters", "list", "--source", "promidata", "--json").stdout)
    assert [r["key"] for r in left] == [image]
    promidata_env.reset_stats()
    again = json.loads(invoke("sync", "promidata", "--supplier", "B7", "--direct").stdout)
    # The redriven family is fetched again (and fails again: still poisoned); the dead image
    # is left alone until it is redriven too.
    assert again["results"][0]["errors"] == 1
    stats = promidata_env.stats()
    assert stats["product:B7"] == 1 and "image:B7" not in stats
    back = json.loads(invoke("dead-letters", "list", "--source", "promidata", "--json").stdout)
    assert sorted(r["key"] for r in back) == sorted([family, image])
