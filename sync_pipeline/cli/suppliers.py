"""`sync-pipeline suppliers ...` and `sync-pipeline sync promidata`: Promidata suppliers."""

from __future__ import annotations

import json
import os
import sys
import uuid
from collections import Counter
from typing import Any

import click
from sqlalchemy import select

from sync_pipeline.cli import context
from sync_pipeline.core import priorities
from sync_pipeline.core.db import transaction
from sync_pipeline.core.models import PromidataFailure, PromidataFamily, PromidataProgress
from sync_pipeline.core.settings import DEFAULT_SANDBOX_PORT, PROMIDATA_PORT_OFFSET

JOB = "promidata_supplier_sync"
PARTITIONS = "promidata_suppliers"
#: Default port of the Promidata sandbox (the Strava sandbox's default port + 5).
SANDBOX_PORT = DEFAULT_SANDBOX_PORT + PROMIDATA_PORT_OFFSET


def _db_url() -> str:
    return context.app_db(context.settings()).url


@click.group()
def suppliers() -> None:
    """Promidata suppliers: which are synced, their progress and failed families/images."""


@suppliers.command("add")
@click.argument("codes", nargs=-1, required=True)
@click.option("--name", help="Display name (one code only).")
def suppliers_add(codes: tuple[str, ...], name: str | None) -> None:
    """Configure suppliers by code (e.g. A23); the suppliers sensor adds their partitions."""
    from sync_pipeline.defs.promidata.sync import add_supplier

    db_url = _db_url()
    for code in codes:
        try:
            added = add_supplier(db_url, code, name if len(codes) == 1 else None)
        except ValueError as exc:
            raise click.ClickException(str(exc)) from exc
        click.echo(f"{'added' if added else 'already configured:'} supplier {code}")


@suppliers.command("remove")
@click.argument("code")
def suppliers_remove(code: str) -> None:
    """Stop syncing a supplier (its stored catalog stays)."""
    from sync_pipeline.defs.promidata.sync import remove_supplier

    if not remove_supplier(_db_url(), code):
        raise click.ClickException(f"supplier {code} is not configured")
    click.echo(f"removed supplier {code}")


def _progress(db_url: str) -> dict[str, dict[str, PromidataProgress]]:
    with transaction(db_url) as s:
        rows = list(s.scalars(select(PromidataProgress)))
    out: dict[str, dict[str, PromidataProgress]] = {}
    for row in rows:
        out.setdefault(row.supplier, {})[row.stage] = row
    return out


def _family_counts(db_url: str) -> dict[str, Counter[str]]:
    with transaction(db_url) as s:
        rows = s.execute(select(PromidataFamily.supplier, PromidataFamily.status)).all()
    out: dict[str, Counter[str]] = {}
    for supplier, status in rows:
        out.setdefault(supplier, Counter())[status] += 1
    return out


@suppliers.command("list")
@click.option("--json", "as_json", is_flag=True)
def suppliers_list(as_json: bool) -> None:
    """Configured suppliers with their families and each stage's last state."""
    from sync_pipeline.defs.promidata.sync import STAGES, list_suppliers

    db_url = _db_url()
    progress = _progress(db_url)
    counts = _family_counts(db_url)
    rows = []
    for sup in list_suppliers(db_url):
        stages = progress.get(sup.code, {})
        rows.append(
            {
                "code": sup.code,
                "name": sup.name,
                "families_active": counts.get(sup.code, Counter())["active"],
                "families_discontinued": counts.get(sup.code, Counter())["discontinued"],
                "import_checked_at": str(sup.import_checked_at or ""),
                **{f"{st}_state": stages[st].state for st in STAGES if st in stages},
            }
        )
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        click.echo("no suppliers; add one with `sync-pipeline suppliers add CODE`")
        return
    for r in rows:
        states = " ".join(f"{st}={r.get(f'{st}_state', '-')}" for st in STAGES)
        click.echo(
            f"{r['code']}: {r['families_active']} families ({r['families_discontinued']} "
            f"discontinued), {states}"
        )


def status_report(db_url: str) -> dict[str, Any]:
    """The seed's queue stats per stage and job status per supplier, from the app DB."""
    from sync_pipeline.defs.promidata.sync import STAGES, list_suppliers

    progress = _progress(db_url)
    configured = [s.code for s in list_suppliers(db_url)]
    with transaction(db_url) as s:
        fails = list(s.scalars(select(PromidataFailure)))
    stages: dict[str, Counter[str]] = {st: Counter() for st in STAGES}
    per_supplier = {}
    for code in configured:
        rows = progress.get(code, {})
        for st in STAGES:
            stages[st][rows[st].state if st in rows else "waiting"] += 1
        current = next(
            (rows[st] for st in STAGES if st in rows and rows[st].state == "active"),
            None,
        ) or next((rows[st] for st in reversed(STAGES) if st in rows), None)
        per_supplier[code] = (
            {
                "stage": current.stage,
                "state": current.state,
                "step": current.step,
                "done": current.done,
                "total": current.total,
                "percent": current.percent if current.total else 100.0,
                "figures": current.figures,
                "run_id": current.run_id,
                "updated_at": str(current.updated_at),
            }
            if current
            else {"stage": None, "state": "waiting"}
        )
    delayed = Counter(f.kind for f in fails if not f.dead)
    dead = Counter(f.kind for f in fails if f.dead)
    return {
        "stages": {
            st: {
                "waiting": c["waiting"],
                "active": c["active"],
                "completed": c["completed"],
                "failed": c["failed"],
            }
            for st, c in stages.items()
        },
        # Items waiting for their retry in the next run (delayed) and dead letters.
        "items": {
            "families_delayed": delayed["family"],
            "families_dead": dead["family"],
            "images_delayed": delayed["image"],
            "images_dead": dead["image"],
        },
        "suppliers": per_supplier,
    }


@suppliers.command("status")
@click.option("--json", "as_json", is_flag=True)
def suppliers_status(as_json: bool) -> None:
    """Per stage waiting/active/completed/failed; per supplier its current step and percent."""
    report = status_report(_db_url())
    if as_json:
        click.echo(json.dumps(report, indent=2, default=str))
        return
    for stage, counts in report["stages"].items():
        click.echo(f"{stage}: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
    click.echo("items: " + ", ".join(f"{k} {v}" for k, v in report["items"].items()))
    for code, p in report["suppliers"].items():
        if p.get("stage") is None:
            click.echo(f"{code}: never synced")
            continue
        click.echo(
            f"{code}: {p['stage']} {p['state']} {p['step']} {p['done']}/{p['total']} "
            f"({p['percent']}%)"
        )


@suppliers.command("failures")
@click.option("--supplier", help="Only this supplier.")
@click.option("--dead", is_flag=True, help="Only dead letters (not retried by the next run).")
@click.option("--json", "as_json", is_flag=True)
def suppliers_failures(supplier: str | None, dead: bool, as_json: bool) -> None:
    """Families and images that failed, newest first, with their reasons."""
    from sync_pipeline.defs.promidata.sync import failures

    rows = [
        {
            "supplier": f.supplier,
            "kind": f.kind,
            "item": f.item,
            "error_class": f.error_class,
            "dead": f.dead,
            "attempts": f.attempts,
            "last_failed_at": str(f.last_failed_at),
            "reason": f.reason,
        }
        for f in failures(_db_url(), supplier, dead_only=dead)
    ]
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        click.echo("no failures")
    for r in rows:
        state = "dead" if r["dead"] else "retried next run"
        click.echo(
            f"{r['supplier']}/{r['kind']} {r['item']}: {r['error_class']} ({state}, "
            f"{r['attempts']} attempt(s))\n    {r['reason']}"
        )


@suppliers.command("redrive")
@click.option("--supplier", required=True)
@click.option("--kind", type=click.Choice(["family", "image", "line"]))
@click.option("--item", help="One family SKU or image SHA-256.")
def suppliers_redrive(supplier: str, kind: str | None, item: str | None) -> None:
    """Make failed families/images eligible again; the supplier's next sync retries them."""
    from sync_pipeline.defs.promidata.sync import redrive

    n = redrive(_db_url(), supplier, kind, item)
    click.echo(f"{n} failure(s) of {supplier} will be retried by its next sync")


@suppliers.command("sandbox")
@click.option("--port", default=SANDBOX_PORT, show_default=True)
@click.option("--families", default=8, show_default=True, type=click.IntRange(0, 100_000))
@click.option("--supplier", "codes", multiple=True, help="Supplier code (default A23 A360 D170).")
@click.option("--seed", default=42, show_default=True)
@click.option("--configure", is_flag=True, help="Also add the suppliers to the app database.")
def suppliers_sandbox(
    port: int, families: int, codes: tuple[str, ...], seed: int, configure: bool
) -> None:
    """Serve the Promidata sandbox (demo suppliers) on loopback until Ctrl-C or SIGTERM."""
    import signal
    import threading

    from sync_pipeline.sandbox.promidata import (
        PromidataSandboxConfig,
        PromidataSandboxState,
        create_app,
    )
    from sync_pipeline.sandbox.server import SandboxServer

    chosen = codes or ("A23", "A360", "D170")
    state = PromidataSandboxState(
        PromidataSandboxConfig(seed=seed, suppliers={c: families for c in chosen})
    )
    server = SandboxServer(create_app(state), port=port)
    try:
        server.start()
    except OSError as exc:
        raise click.ClickException(
            f"Cannot start the Promidata sandbox on 127.0.0.1:{port} ({exc}); pick another "
            "port with --port."
        ) from exc
    stop = threading.Event()
    previous = signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        if configure:
            from sync_pipeline.defs.promidata.sync import add_supplier

            db_url = _db_url()
            for code in chosen:
                add_supplier(db_url, code)
        click.echo(f"Promidata sandbox on {server.url} (suppliers {', '.join(chosen)})")
        click.echo(f"point the pipeline at it: PROMIDATA_BASE_URL={server.url}")
        stop.wait()
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)
        server.stop()


def _resources() -> tuple[Any, Any]:
    from sync_pipeline.defs.promidata.resources import promidata_from_env
    from sync_pipeline.defs.promidata.storage import storage_from_env

    s = context.settings()
    app_db = context.app_db(s)
    if not os.environ.get("PROMIDATA_BASE_URL"):
        raise click.ClickException(
            "PROMIDATA_BASE_URL is not set: your Promidata profile URL "
            "(https://promi-dl.de/Profiles/Live/<profile id>), or the sandbox's "
            "(`sync-pipeline suppliers sandbox`); put it in .env."
        )
    return promidata_from_env(app_db, os.environ), storage_from_env(os.environ, str(s.home))


@click.command("promidata")
@click.option("--supplier", "codes", multiple=True, help="A supplier code (repeatable).")
@click.option("--all", "all_suppliers", is_flag=True, help="Every configured supplier.")
@click.option("--priority", type=int, help="Run priority (default 10).")
@click.option("--direct", is_flag=True, help="Run in this process now, bypassing the queue.")
def sync_promidata(
    codes: tuple[str, ...], all_suppliers: bool, priority: int | None, direct: bool
) -> None:
    """Sync Promidata suppliers: queue a run per supplier (prints its id), or --direct."""
    from sync_pipeline.defs.promidata.sync import list_suppliers

    if bool(codes) == all_suppliers:
        raise click.UsageError("Give --supplier CODE (repeatable) or --all.")
    s = context.settings()
    db_url = context.app_db(s).url
    configured = [x.code for x in list_suppliers(db_url)]
    unknown = [c for c in codes if c not in configured]
    if unknown:
        raise click.ClickException(
            f"not configured: {', '.join(unknown)}; add with `sync-pipeline suppliers add`"
        )
    keys = list(codes) or configured
    if not keys:
        raise click.ClickException("no suppliers configured")
    if direct:
        _direct(db_url, keys)
        return
    from sync_pipeline.cli import _launch

    prio = priorities.MANUAL if priority is None else priority
    with context.dagster_instance(s) as instance:
        missing = [k for k in keys if not instance.has_dynamic_partition(PARTITIONS, k)]
        if missing:
            instance.add_dynamic_partitions(PARTITIONS, missing)
    for key in keys:
        tags = {**priorities.run_tags(prio, "promidata", "cli"), "dagster/partition": key}
        _launch.queue(s, JOB, tags=tags, run_config={})


def _direct(db_url: str, keys: list[str]) -> None:
    from sync_pipeline.core.sync_runner import RunContext
    from sync_pipeline.defs.promidata.sync import Limits, sync_supplier_direct

    api, storage = _resources()
    last: dict[str, float] = {}

    def show(p: dict[str, Any]) -> None:
        key = f"{p['supplier']}/{p['stage']}"
        if p.get("state") == "active" and p["percent"] - last.get(key, -100.0) < 10:
            return
        last[key] = p["percent"]
        click.echo(
            f"{p['supplier']} {p['stage']}: {p['step']} {p['done']}/{p['total']} "
            f"({p['percent']}%) {p.get('state', '')}",
            err=True,
        )

    results = []
    try:
        for key in keys:
            ctx = RunContext(owner=f"direct-{uuid.uuid4().hex[:12]}")
            results.append(
                sync_supplier_direct(
                    api, storage, db_url, key, ctx, limits=Limits.of(api), on_progress=show
                )
            )
    finally:
        api.close()
    click.echo(
        json.dumps(
            {
                "success": True,
                "mode": "direct",
                "suppliersProcessed": len(results),
                "results": results,
            },
            indent=2,
        )
    )
    if any(r["status"] != "succeeded" for r in results):
        sys.exit(1)
