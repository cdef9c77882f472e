"""`sync-pipeline webhooks`: run the push-event receiver and manage Strava's push subscription."""

from __future__ import annotations

import json
import os
from typing import Any

import click
import httpx
from starlette.applications import Starlette

from sync_pipeline.cli import context
from sync_pipeline.core import db
from sync_pipeline.core.settings import Settings
from sync_pipeline.defs.outreach.unsubscribe import KEY_VARIABLE as UNSUBSCRIBE_KEY_ENV
from sync_pipeline.defs.outreach.unsubscribe import UNSUBSCRIBE_PATH

VERIFY_TOKEN_ENV = "STRAVA_WEBHOOK_VERIFY_TOKEN"
SUBSCRIPTION_IDS_ENV = "STRAVA_WEBHOOK_SUBSCRIPTION_IDS"
INLINE_WORKERS_ENV = "STRAVA_WEBHOOK_INLINE_WORKERS"
DEFAULT_INLINE_WORKERS = 2
WORKER_HEALTHCHECK_SECONDS = 60
SUBSCRIPTIONS_PATH = "/api/v3/push_subscriptions"
# Creating a subscription waits for Strava's validation GET to the callback (up to 2 s).
TIMEOUT = httpx.Timeout(20.0, connect=5.0)


def _verify_token() -> str:
    token = os.environ.get(VERIFY_TOKEN_ENV, "")
    if not token:
        raise click.ClickException(
            f"{VERIFY_TOKEN_ENV} is not set: choose a random string (e.g. "
            "`python -c 'import secrets; print(secrets.token_urlsafe(24))'`) and put it in .env; "
            "the receiver and `webhooks subscribe` must use the same one."
        )
    return token


def _subscription_ids() -> set[int] | None:
    raw = os.environ.get(SUBSCRIPTION_IDS_ENV, "").strip()
    if not raw:
        return None
    try:
        return {int(part) for part in raw.split(",") if part.strip()}
    except ValueError:
        raise click.ClickException(
            f"{SUBSCRIPTION_IDS_ENV} must be comma-separated integers, got {raw!r}"
        ) from None


def _inline_workers() -> int:
    raw = os.environ.get(INLINE_WORKERS_ENV, "").strip()
    if not raw:
        return DEFAULT_INLINE_WORKERS
    try:
        workers = int(raw)
    except ValueError:
        workers = -1
    if not 0 <= workers <= 16:
        raise click.ClickException(f"{INLINE_WORKERS_ENV} must be an integer 0-16, got {raw!r}")
    return workers


def _credentials(s: Settings) -> dict[str, str]:
    return context.strava_credentials(s)


def _strava_error(response: httpx.Response) -> str:
    try:
        body: Any = response.json()
    except ValueError:
        return response.text[:500] or response.reason_phrase
    if isinstance(body, dict):
        message = str(body.get("message", ""))
        details = [
            " ".join(str(e[k]) for k in ("resource", "field", "code") if e.get(k))
            for e in body.get("errors") or []
            if isinstance(e, dict)
        ]
        return "; ".join(p for p in [message, *details] if p) or json.dumps(body)[:500]
    return json.dumps(body)[:500]


def _call(method: str, path: str, **kwargs: Any) -> httpx.Response:
    """One request to the Strava API with timeouts; failures become click errors."""
    s = context.settings()
    url = s.strava_base_url.rstrip("/") + path
    try:
        response = httpx.request(method, url, timeout=TIMEOUT, **kwargs)
    except httpx.TimeoutException as exc:
        raise click.ClickException(f"{method} {url} timed out ({type(exc).__name__})") from exc
    except httpx.HTTPError as exc:
        raise click.ClickException(f"{method} {url} failed: {exc}") from exc
    if not response.is_success:
        raise click.ClickException(
            f"Strava answered {response.status_code} to {method} {path}: {_strava_error(response)}"
        )
    return response


@click.group()
def webhooks() -> None:
    """Strava push events: the receiver and the push subscription."""


@webhooks.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8720, show_default=True, type=click.IntRange(1, 65535))
@click.option("--log-level", default="info", show_default=True)
@click.option(
    "--workers",
    default=1,
    show_default=True,
    type=click.IntRange(1, 64),
    help="Receiver processes sharing the port (each batches its own inbox writes).",
)
@click.option(
    "--inline-workers",
    type=click.IntRange(0, 16),
    default=None,
    help=f"Threads per receiver process that sync an athlete as soon as their activity event "
    f"is stored (the fast path; the sensor handles what they do not take). 0: off. Default: "
    f"${INLINE_WORKERS_ENV}, else {DEFAULT_INLINE_WORKERS}.",
)
def serve(host: str, port: int, log_level: str, workers: int, inline_workers: int | None) -> None:
    """Run the receiver (GET/POST /webhooks/strava, GET /healthz, and GET/POST
    /outreach/unsubscribe/TOKEN when OUTREACH_UNSUBSCRIBE_KEY is set) until Ctrl-C."""
    import uvicorn

    s = context.settings()  # loads `.env` (the group does too) before the token is read
    _verify_token()
    _subscription_ids()
    if inline_workers is not None:  # worker processes (the app factory) read it from there
        os.environ[INLINE_WORKERS_ENV] = str(inline_workers)
    inline = _inline_workers()
    try:
        db.check_schema(s.database_url)
    except db.SchemaOutOfDateError as exc:
        raise click.ClickException(str(exc)) from exc
    if inline:  # the fast path's settings, checked before serving
        context.strava(s)
        context.dagster_home(s)
    click.echo(
        f"webhook receiver on http://{host}:{port}/webhooks/strava "
        f"(database {db.redact_url(s.database_url)}, {workers} worker(s), fast path "
        f"{f'{inline} thread(s)' if inline else 'off'}); Ctrl-C stops it"
    )
    if _unsubscribe_key():
        click.echo(f"one-click unsubscribe on http://{host}:{port}{UNSUBSCRIBE_PATH}")
    if workers == 1:
        app: Any = receiver_app()
    else:  # worker processes import the factory and build their own app
        app = f"{__name__}:receiver_app"
    uvicorn.run(
        app,
        host=host,
        port=port,
        log_level=log_level,
        access_log=False,
        workers=workers,
        factory=workers > 1,
        # A worker process builds the fast path (Dagster, the sources' clients) before it
        # serves; on a busy machine that exceeds uvicorn's 5 s health check, which would kill
        # and restart it forever.
        timeout_worker_healthcheck=WORKER_HEALTHCHECK_SECONDS,
    )


def receiver_app() -> Starlette:
    """The receiver configured from the settings and environment (uvicorn's app factory)."""
    from sync_pipeline.webhooks.app import create_webhook_app

    s = context.settings()
    inline = _inline_workers()
    fast_path = None
    if inline:
        from sync_pipeline.webhooks.fastpath import FastPath

        context.dagster_home(s)  # sets DAGSTER_HOME for `DagsterInstance.get()`

        def instance() -> Any:
            import dagster as dg

            return dg.DagsterInstance.get()

        # Built in the fast path's threads: the receiver answers before Dagster has loaded.
        fast_path = FastPath(lambda: context.strava(s), instance, workers=inline)
    return create_webhook_app(
        s.database_url,
        _verify_token(),
        _subscription_ids(),
        unsubscribe_key=_unsubscribe_key(),
        fast_path=fast_path,
    )


def _unsubscribe_key() -> str | None:
    """OUTREACH_UNSUBSCRIBE_KEY: serve outreach's one-click unsubscribe links when set."""
    return os.environ.get(UNSUBSCRIBE_KEY_ENV) or None


@webhooks.command("subscribe")
@click.option(
    "--callback-url", required=True, help="Public URL of the receiver's /webhooks/strava."
)
def subscribe(callback_url: str) -> None:
    """Create the application's push subscription (Strava validates the callback first)."""
    data = {
        **_credentials(context.settings()),
        "callback_url": callback_url,
        "verify_token": _verify_token(),
    }
    body = _call("POST", SUBSCRIPTIONS_PATH, data=data).json()
    click.echo(f"subscribed: id {body.get('id')} -> {callback_url}")
    click.echo(f"(optional) restrict the receiver to it: {SUBSCRIPTION_IDS_ENV}={body.get('id')}")


@webhooks.command("list")
@click.option("--json", "as_json", is_flag=True)
def list_subscriptions(as_json: bool) -> None:
    """Show the application's push subscription(s)."""
    rows = _call("GET", SUBSCRIPTIONS_PATH, params=_credentials(context.settings())).json()
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        click.echo("no push subscription")
        return
    for row in rows:
        click.echo(f"{row.get('id')}  {row.get('callback_url')}  created {row.get('created_at')}")


@webhooks.command("unsubscribe")
@click.argument("subscription_id", type=int)
def unsubscribe(subscription_id: int) -> None:
    """Delete a push subscription."""
    params = _credentials(context.settings())
    _call("DELETE", f"{SUBSCRIPTIONS_PATH}/{subscription_id}", params=params)
    click.echo(f"deleted push subscription {subscription_id}")
