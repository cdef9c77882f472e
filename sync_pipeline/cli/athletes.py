"""`sync-pipeline athletes`: connect, list and disconnect Strava athletes."""

from __future__ import annotations

import json
import textwrap

import click

from sync_pipeline.cli import context
from sync_pipeline.core.errors import SyncError
from sync_pipeline.core.health import reason_summary


@click.group()
def athletes() -> None:
    """Connect, list and disconnect Strava athletes."""


@athletes.command("connect")
@click.option(
    "--sandbox-athlete",
    "sandbox_ids",
    multiple=True,
    type=int,
    help="Sandbox athlete id to connect (repeatable); sandbox only.",
)
@click.option("--count", default=0, type=click.IntRange(0), help="Connect N sandbox athletes.")
@click.option("--browser", is_flag=True, help="Print the consent URL and wait for a person.")
@click.option("--port", default=0, help="Local port for the OAuth redirect (0: any).")
def athletes_connect(sandbox_ids: tuple[int, ...], count: int, browser: bool, port: int) -> None:
    """Connect athletes through Strava's OAuth flow (auto-approved on the sandbox)."""
    from sync_pipeline.defs.strava.athletes import connect_via_oauth

    strava = context.strava(context.settings())
    ids: list[int | None] = list(sandbox_ids) or [None] * max(count, 1)
    short = ""
    if count and not sandbox_ids and not browser:
        ids, short = _next_sandbox_athletes(strava.base_url, strava.app_db.url, count)
    try:
        for sandbox_id in ids:
            athlete_id = connect_via_oauth(
                strava,
                redirect_port=port,
                auto_approve=not browser,
                sandbox_athlete_id=sandbox_id,
                on_url=lambda url: click.echo(f"Open this URL to authorize:\n{url}"),
            )
            click.echo(f"connected athlete {athlete_id}")
    except SyncError as exc:
        raise click.ClickException(str(exc)) from exc
    finally:
        strava.close()
    if short:
        raise click.ClickException(short)


def _next_sandbox_athletes(base_url: str, db_url: str, count: int) -> tuple[list[int | None], str]:
    """The first `count` sandbox athletes not connected yet, and what is missing if fewer."""
    import httpx

    from sync_pipeline.cli.sandbox import sandbox_athletes
    from sync_pipeline.defs.strava.athletes import connected_athlete_ids

    try:
        everyone = [int(a["id"]) for a in sandbox_athletes(base_url)]
    except httpx.HTTPError as exc:
        raise click.ClickException(
            f"--count connects sandbox athletes, but {base_url} does not list them ({exc}); "
            "for the real Strava use --browser."
        ) from exc
    connected = set(connected_athlete_ids(db_url))
    pending: list[int | None] = [a for a in everyone if a not in connected]
    pending = pending[:count]
    if len(pending) == count:
        return pending, ""
    missing = (f"connected {len(pending)} of {count}: " if pending else "connected none: ") + (
        f"all {len(everyone)} sandbox athletes are connected already. Start the sandbox with "
        "more (`sync-pipeline sandbox --athletes N`), or connect one again with "
        "--sandbox-athlete ID."
    )
    return pending, missing


@athletes.command("list")
@click.option("--json", "as_json", is_flag=True)
def athletes_list(as_json: bool) -> None:
    """List athletes, their connection state and last sync."""
    from sync_pipeline.defs.strava.athletes import list_athletes

    rows = list_athletes(context.app_db(context.settings()).url)
    if as_json:
        click.echo(json.dumps([r.__dict__ for r in rows], default=str, indent=2))
        return
    click.echo(f"{'id':>10}  {'name':24} {'state':16} {'acts':>6}  {'sync':10} last success")
    for r in rows:
        last = r.last_success_at.strftime("%Y-%m-%d %H:%M") if r.last_success_at else "-"
        click.echo(
            f"{r.id:>10}  {r.name[:24]:24} {r.state:16} {r.activities:>6}  "
            f"{r.sync_status:10} {last}"
        )
        if r.last_error:  # the reason on lines of its own, summarized (`--json`: in full)
            click.echo(
                textwrap.fill(
                    reason_summary(r.last_error, 300),
                    width=100,
                    initial_indent=" " * 12 + "reason: ",
                    subsequent_indent=" " * 20,
                    break_long_words=False,
                )
            )


@athletes.command("disconnect")
@click.argument("athlete_id", type=int)
@click.option("--no-revoke", is_flag=True, help="Do not call Strava's deauthorize endpoint.")
def athletes_disconnect(athlete_id: int, no_revoke: bool) -> None:
    """Revoke access and delete an athlete's tokens and data (the partition goes too)."""
    from sync_pipeline.defs.strava.athletes import disconnect

    strava = context.strava(context.settings())
    try:
        if not disconnect(strava, athlete_id, revoke=not no_revoke):
            raise click.ClickException(
                f"No athlete {athlete_id}; see `sync-pipeline athletes list`."
            )
    finally:
        strava.close()
    click.echo(f"disconnected athlete {athlete_id}; the partition sensor removes its partition")
