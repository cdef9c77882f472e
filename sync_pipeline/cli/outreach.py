"""`sync-pipeline campaigns|prospects|outreach ...`: campaigns, prospects and the job types."""

from __future__ import annotations

import datetime as dt
import json
import os
import uuid
from pathlib import Path
from typing import Any

import click

from sync_pipeline.cli import context
from sync_pipeline.core.errors import ConfigError, SyncError
from sync_pipeline.core.settings import Env
from sync_pipeline.core.sync_runner import RunContext, SyncOutcome


def _db_url() -> str:
    return context.app_db(context.settings()).url


def _fail(exc: Exception) -> click.ClickException:
    return click.ClickException(str(exc))


def _echo_json(value: Any) -> None:
    click.echo(json.dumps(value, indent=2, sort_keys=True, default=str))


# -- campaigns -------------------------------------------------------------------------------
@click.group()
def campaigns() -> None:
    """Outreach campaigns: sender mailbox, templates, follow-ups and daily cap."""


@campaigns.command("add")
@click.argument("name")
@click.option("--sender", required=True, help="Sender mailbox (SMTP login's address).")
@click.option("--subject", required=True, help="Jinja2 subject template.")
@click.option(
    "--body-file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    required=True,
    help="Jinja2 body template file.",
)
@click.option(
    "--followups-file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help='JSON list of {"delay_days", "subject", "body"} follow-up steps.',
)
@click.option("--daily-cap", default=50, show_default=True, help="Messages per day.")
@click.option("--min-gap", default=60, show_default=True, help="Seconds between two sends.")
def campaigns_add(
    name: str,
    sender: str,
    subject: str,
    body_file: Path,
    followups_file: Path | None,
    daily_cap: int,
    min_gap: int,
) -> None:
    """Create a campaign."""
    from sync_pipeline.defs.outreach.prospects import add_campaign

    try:
        followups = json.loads(followups_file.read_text()) if followups_file else []
        add_campaign(
            _db_url(),
            name,
            sender=sender,
            subject=subject,
            body=body_file.read_text(),
            followups=followups,
            daily_cap=daily_cap,
            min_gap_seconds=min_gap,
        )
    except (ConfigError, ValueError) as exc:
        raise _fail(exc) from exc
    click.echo(f"added campaign {name} (sender {sender}, cap {daily_cap}/day)")


@campaigns.command("list")
@click.option("--json", "as_json", is_flag=True)
def campaigns_list(as_json: bool) -> None:
    """Campaigns with their prospects per state."""
    from sync_pipeline.defs.outreach.prospects import campaigns as all_campaigns

    rows = all_campaigns(_db_url())
    if as_json:
        _echo_json(rows)
        return
    for c in rows:
        states = ", ".join(f"{k} {v}" for k, v in sorted(c["prospects"].items())) or "none"
        click.echo(f"{c['name']}  {c['state']}  {c['sender']}  cap {c['daily_cap']}  ({states})")


def _set_state(name: str, state: str) -> None:
    from sync_pipeline.defs.outreach.prospects import set_campaign_state

    try:
        set_campaign_state(_db_url(), name, state)
    except ConfigError as exc:
        raise _fail(exc) from exc
    click.echo(f"campaign {name} {state}")


@campaigns.command("pause")
@click.argument("name")
def campaigns_pause(name: str) -> None:
    """Stop sending for a campaign (enrichment and replies go on)."""
    _set_state(name, "paused")


@campaigns.command("resume")
@click.argument("name")
def campaigns_resume(name: str) -> None:
    """Send again for a paused campaign."""
    _set_state(name, "active")


# -- prospects -------------------------------------------------------------------------------
@click.group()
def prospects() -> None:
    """Prospects of outreach campaigns."""


@prospects.command("import")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--campaign", required=True)
def prospects_import(file: Path, campaign: str) -> None:
    """Import a CSV (first_name,last_name,company[,id,tier,domain,email,timezone]): all rows,
    or none with the reason for each rejected row."""
    from sync_pipeline.defs.outreach.prospects import import_prospects

    try:
        report = import_prospects(_db_url(), file, campaign)
    except (ConfigError, UnicodeDecodeError) as exc:
        raise _fail(exc) from exc
    if not report.ok:
        for line, reason in report.rejected:
            click.echo(f"line {line}: {reason}", err=True)
        raise click.ClickException(
            f"{len(report.rejected)} row(s) rejected; nothing imported. Fix them and import again."
        )
    click.echo(f"imported {len(report.imported)} prospects into {campaign}")


@prospects.command("list")
@click.option("--campaign")
@click.option("--state")
@click.option("--json", "as_json", is_flag=True)
def prospects_list(campaign: str | None, state: str | None, as_json: bool) -> None:
    """Prospects (of one campaign, in one state)."""
    from sync_pipeline.defs.outreach.prospects import list_prospects

    rows = list_prospects(_db_url(), campaign, state)
    if as_json:
        _echo_json(
            [
                {
                    "id": p.id,
                    "campaign": p.campaign,
                    "tier": p.tier,
                    "state": p.state,
                    "email": p.email,
                    "step": p.step,
                }
                for p in rows
            ]
        )
        return
    for p in rows:
        click.echo(f"{p.id}  {p.campaign}  {p.tier}  {p.state}  {p.email or '-'}  step {p.step}")


@prospects.command("show")
@click.argument("prospect_id")
def prospects_show(prospect_id: str) -> None:
    """A prospect, its messages and the state of each job type."""
    from sync_pipeline.defs.outreach.prospects import show_prospect

    try:
        _echo_json(show_prospect(_db_url(), prospect_id))
    except ConfigError as exc:
        raise _fail(exc) from exc


@prospects.command("remove")
@click.argument("prospect_ids", nargs=-1, required=True)
def prospects_remove(prospect_ids: tuple[str, ...]) -> None:
    """Delete prospects with their messages and job states."""
    from sync_pipeline.defs.outreach.prospects import remove_prospects

    n = remove_prospects(_db_url(), prospect_ids)
    click.echo(f"removed {n} prospect(s)")


# -- the job types, directly -----------------------------------------------------------------
@click.group()
def outreach() -> None:
    """Run outreach job types for one prospect, or show the queue."""


def _clients() -> Any:
    from sync_pipeline.defs.outreach.resources import outreach_clients

    s = context.settings()
    try:
        return context.app_db(s), outreach_clients(context.app_db(s), Env(dict(os.environ)))
    except ConfigError as exc:
        raise _fail(exc) from exc


def _report(outcome: SyncOutcome) -> None:
    figures = ", ".join(f"{k} {v}" for k, v in sorted(outcome.figures.items()))
    line = f"{outcome.key}: {outcome.status}" + (f" ({figures})" if figures else "")
    if outcome.error:
        line += f": {outcome.error}"
    if outcome.retry_at:
        line += (
            f"; retry at {dt.datetime.fromtimestamp(outcome.retry_at, dt.UTC):%Y-%m-%d %H:%M} UTC"
        )
    click.echo(line)
    if outcome.status == "failed":
        raise SystemExit(1)


def _ctx() -> RunContext:
    return RunContext(owner=f"cli-{uuid.uuid4().hex[:12]}")


def _known(prospect_ids: tuple[str, ...] | list[str]) -> None:
    from sync_pipeline.defs.outreach.sync import prospects_of

    missing = sorted(set(prospect_ids) - set(prospects_of(_db_url())))
    if missing:
        raise click.ClickException(
            f"Unknown prospect(s): {', '.join(missing)}; see `sync-pipeline prospects list`."
        )


def _queue(source_name: str, prospect_ids: list[str], **config: Any) -> None:
    """Queue the job type's single-prospect run (a batch run for several prospects) through
    the shared launch path; the prospects' partitions are added first if missing."""
    from sync_pipeline.cli import _launch
    from sync_pipeline.core import priorities
    from sync_pipeline.defs.outreach.source import OUTREACH_SOURCES, prospects

    declared = next(d for d in OUTREACH_SOURCES if d.name == source_name)
    _known(prospect_ids)
    s = context.settings()
    tags = priorities.run_tags(priorities.MANUAL, source_name, "cli")
    with context.dagster_instance(s) as instance:
        name = prospects.name or ""
        missing = [p for p in prospect_ids if not instance.has_dynamic_partition(name, p)]
        if missing:
            instance.add_dynamic_partitions(name, missing)
    if len(prospect_ids) == 1:
        tags = {**tags, "dagster/partition": prospect_ids[0]}
        run_config = declared.single_run_config(**config)
        _launch.queue(s, declared.single_job_name, tags=tags, run_config=run_config)
    else:
        run_config = declared.sweep_run_config(keys=prospect_ids, **config)
        _launch.queue(s, declared.sweep_job_name, tags=tags, run_config=run_config)


PROSPECT = click.option("--prospect", "prospect_id", required=True, help="Prospect id.")
DIRECT = click.option(
    "--direct", is_flag=True, help="Run here, without Dagster (default: queue a Dagster run)."
)


@outreach.command("enrich-website")
@PROSPECT
@DIRECT
def outreach_enrich_website(prospect_id: str, direct: bool) -> None:
    """Find the company's domain and check its website."""
    from sync_pipeline.defs.outreach.sync import SOURCE_WEBSITE, enrich_website

    if not direct:
        _queue(SOURCE_WEBSITE, [prospect_id])
        return
    _, clients = _clients()
    try:
        _report(enrich_website(clients.hunter, prospect_id, _ctx()))
    finally:
        clients.hunter.close()


@outreach.command("enrich-email")
@PROSPECT
@DIRECT
def outreach_enrich_email(prospect_id: str, direct: bool) -> None:
    """Find the person's address (kept above the confidence threshold)."""
    from sync_pipeline.defs.outreach.sync import SOURCE_EMAIL, enrich_email

    if not direct:
        _queue(SOURCE_EMAIL, [prospect_id])
        return
    _, clients = _clients()
    try:
        _report(
            enrich_email(clients.hunter, prospect_id, _ctx(), min_confidence=clients.min_confidence)
        )
    finally:
        clients.hunter.close()


@outreach.command("send")
@PROSPECT
@DIRECT
def outreach_send(prospect_id: str, direct: bool) -> None:
    """Send the prospect's next message (at most once; business hours and caps apply)."""
    from sync_pipeline.defs.outreach.sync import SOURCE_SEND, SendSettings, send_email

    if not direct:
        _queue(SOURCE_SEND, [prospect_id])
        return
    app_db, clients = _clients()
    settings = SendSettings(
        unsubscribe_url=clients.unsubscribe_url, unsubscribe_key=clients.unsubscribe_key
    )
    _report(send_email(clients.smtp, clients.imap, app_db, prospect_id, _ctx(), settings=settings))


@outreach.command("replies")
@click.option(
    "--prospect",
    "prospect_id",
    help="Apply this prospect's new mail (queued: its reply run; default: read the INBOX).",
)
@DIRECT
def outreach_replies(prospect_id: str | None, direct: bool) -> None:
    """Read new mail from the INBOX and apply replies, auto-replies and bounces."""
    from sync_pipeline.defs.outreach.sync import SOURCE_REPLY, poll_inbox, process_reply

    if not direct:
        if prospect_id is not None:
            _queue(SOURCE_REPLY, [prospect_id])
            return
        from sync_pipeline.cli import _launch
        from sync_pipeline.core import priorities
        from sync_pipeline.defs.outreach.source import inbox_job

        tags = priorities.run_tags(priorities.MANUAL, SOURCE_REPLY, "cli")
        _launch.queue(context.settings(), inbox_job.name, tags=tags, run_config={})
        return
    if prospect_id is not None:
        _known([prospect_id])
    app_db, clients = _clients()
    try:
        touched = poll_inbox(clients.imap, app_db.url)
    except SyncError as exc:
        raise _fail(exc) from exc
    click.echo(f"{len(touched)} prospect(s) with new mail")
    for pid in [prospect_id] if prospect_id is not None else touched:
        _report(process_reply(app_db, pid, _ctx(), soft_bounce_limit=clients.soft_bounce_limit))


@outreach.command("crm")
@click.option("--prospect", "prospect_ids", multiple=True, help="Prospect id (default: all).")
@DIRECT
def outreach_crm(prospect_ids: tuple[str, ...], direct: bool) -> None:
    """Upsert changed prospects to the CRM (Supabase REST), in batches."""
    from sync_pipeline.defs.outreach.sync import SOURCE_CRM, prospects_of, sync_to_crm

    ids = list(dict.fromkeys(prospect_ids)) or prospects_of(_db_url())
    if not direct:
        if not ids:
            raise click.ClickException("No prospects; import some with `prospects import`.")
        _queue(SOURCE_CRM, ids)
        return
    app_db, clients = _clients()
    try:
        outcomes = sync_to_crm(clients.supabase, app_db, ids, _ctx())
    finally:
        clients.supabase.close()
    counts: dict[str, int] = {}
    for o in outcomes:
        counts[o.status] = counts.get(o.status, 0) + 1
    click.echo(", ".join(f"{k} {v}" for k, v in sorted(counts.items())) or "no prospects")
    if counts.get("failed"):
        raise SystemExit(1)


@outreach.command("status")
@click.option("--json", "as_json", is_flag=True)
def outreach_status(as_json: bool) -> None:
    """Per job type and state: how many prospects and their average attempts."""
    from sync_pipeline.defs.outreach.prospects import queue_stats

    rows = queue_stats(_db_url())
    if as_json:
        _echo_json(rows)
        return
    for r in rows:
        click.echo(
            f"{r['job_type']:<15} {r['state']:<10} {r['count']:>6}  avg attempts "
            f"{r['avg_attempts']}"
        )


@outreach.command("redrive")
@click.argument(
    "job_type",
    type=click.Choice(
        ["enrich_website", "enrich_email", "send_email", "process_reply", "sync_to_crm"]
    ),
)
@click.option("--prospect", "prospect_ids", multiple=True, help="Only these (default: all).")
def outreach_redrive(job_type: str, prospect_ids: tuple[str, ...]) -> None:
    """Put a job type's dead letters back in the queue (attempts reset)."""
    from sync_pipeline.defs.outreach.prospects import redrive

    keys = redrive(_db_url(), job_type, prospect_ids or None)
    click.echo(f"redrove {len(keys)} {job_type} dead letter(s)")
