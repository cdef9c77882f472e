"""`sync-pipeline users ...`: app users of the consistency tracker and their platforms."""

from __future__ import annotations

import json

import click

from sync_pipeline.cli import context
from sync_pipeline.core.errors import ConfigError, SyncError
from sync_pipeline.core.settings import PLATFORM_PORTS

PLATFORM = click.Choice(sorted(PLATFORM_PORTS))


def _fail(exc: Exception) -> click.ClickException:
    return click.ClickException(str(exc))


@click.group()
def users() -> None:
    """App users and their GitHub / YouTube / X / Instagram connections."""


@users.command("add")
@click.argument("user_id")
@click.option("--timezone", "tz", default="UTC", show_default=True, help="IANA time zone.")
@click.option("--name", help="Display name.")
def users_add(user_id: str, tz: str, name: str | None) -> None:
    """Create a user (or change their time zone: their local day counts)."""
    from sync_pipeline.defs.users.accounts import add_user

    try:
        created = add_user(context.app_db(context.settings()).url, user_id, timezone=tz, name=name)
    except ConfigError as exc:
        raise _fail(exc) from exc
    click.echo(f"{'added' if created else 'updated'} user {user_id} ({tz})")


@users.command("connect")
@click.argument("user_id")
@click.argument("platform", type=PLATFORM)
@click.option("--sandbox-account", help="Sandbox only: which sandbox account approves.")
@click.option("--browser", is_flag=True, help="Print the consent URL and wait for a person.")
@click.option("--timeout", default=300.0, show_default=True, help="Seconds to wait for consent.")
def users_connect(
    user_id: str, platform: str, sandbox_account: str | None, browser: bool, timeout: float
) -> None:
    """Connect a platform account through its OAuth consent (auto-approved by sandboxes)."""
    from sync_pipeline.defs.users.accounts import connect

    client = context.platform_client(context.settings(), platform)
    try:
        conn = connect(
            client,
            user_id,
            auto_approve=not browser,
            sandbox_user=sandbox_account,
            on_url=lambda url: click.echo(f"Open this URL to authorize:\n{url}"),
            timeout=timeout,
        )
    except (ConfigError, SyncError) as exc:
        raise _fail(exc) from exc
    finally:
        client.close()
    click.echo(f"connected {user_id} to {platform} account {conn.handle or conn.account_id}")


def _display_names(url: str) -> dict[str, str | None]:
    """{user id: display name (`users add --name`)}."""
    from sqlalchemy import select

    from sync_pipeline.core.db import transaction
    from sync_pipeline.core.models import AppUser

    with transaction(url) as s:
        return {i: n for i, n in s.execute(select(AppUser.id, AppUser.display_name))}


@users.command("list")
@click.option("--json", "as_json", is_flag=True)
def users_list(as_json: bool) -> None:
    """Users, their platforms, privacy, synced days and sync status."""
    from sync_pipeline.defs.users.accounts import list_users

    url = context.app_db(context.settings()).url
    rows = list_users(url)
    names = _display_names(url)
    if as_json:
        out = [{**r.__dict__, "name": names.get(r.id)} for r in rows]
        click.echo(json.dumps(out, indent=2, default=str))
        return
    if not rows:
        click.echo("no users; add one with `sync-pipeline users add USER_ID`")
        return
    for r in rows:
        name = f" {json.dumps(names[r.id], ensure_ascii=False)}" if names.get(r.id) else ""
        click.echo(f"{r.id}{name} ({r.timezone})")
        for platform, p in sorted(r.platforms.items()):
            flags = " private" if p["private"] else ""
            error = f"  ({p['last_error']})" if p["last_error"] else ""
            click.echo(
                f"  {platform:9} {p['handle'] or '-':20} {p['state']}{flags}: {p['days']} days, "
                f"{p['items']} items, sync {p['sync_status']}{error}"
            )


@users.command("privacy")
@click.argument("user_id")
@click.argument("platform", type=PLATFORM)
@click.option("--private/--public", "private", required=True)
def users_privacy(user_id: str, platform: str, private: bool) -> None:
    """Mark a platform private (kept for the owner, left out of public scores) or public."""
    from sync_pipeline.defs.users.accounts import set_privacy
    from sync_pipeline.defs.users.scores import refresh_scores

    url = context.app_db(context.settings()).url
    try:
        set_privacy(url, user_id, platform, private=private)
    except ConfigError as exc:
        raise _fail(exc) from exc
    list(refresh_scores(url, [user_id]))  # the public score must not wait for the next sync
    click.echo(f"{user_id}/{platform} is now {'private' if private else 'public'}")


@users.command("disconnect")
@click.argument("user_id")
@click.argument("platform", type=PLATFORM)
def users_disconnect(user_id: str, platform: str) -> None:
    """Remove a platform connection with its tokens and synced days."""
    from sync_pipeline.defs.users.accounts import disconnect
    from sync_pipeline.defs.users.scores import refresh_scores

    url = context.app_db(context.settings()).url
    if not disconnect(url, user_id, platform):
        raise click.ClickException(f"{user_id} has no {platform} connection.")
    list(refresh_scores(url, [user_id]))
    click.echo(f"disconnected {user_id} from {platform}; their {platform} data is deleted")


@users.command("remove")
@click.argument("user_id")
def users_remove(user_id: str) -> None:
    """Delete a user with every connection, token, synced day and score."""
    from sync_pipeline.defs.users.accounts import delete_user

    if not delete_user(context.app_db(context.settings()).url, user_id):
        raise click.ClickException(f"No user {user_id!r}.")
    click.echo(f"removed {user_id}; the users sensor drops their partition")


@users.command("score")
@click.argument("user_id")
@click.option("--public", is_flag=True, help="Only what the public may see.")
def users_score(user_id: str, public: bool) -> None:
    """Print a user's consistency figures as JSON (computed now from synced days)."""
    from sync_pipeline.defs.users.scores import compute_user

    found = compute_user(context.app_db(context.settings()).url, user_id)
    if found is None:
        raise click.ClickException(f"No user {user_id!r}.")
    c = found[1] if public else found[0]
    out = {"user_id": user_id, "variant": "public" if public else "owner", **c.__dict__}
    click.echo(json.dumps(out, indent=2, default=str))
