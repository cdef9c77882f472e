"""Webhook receiver: acknowledge Strava push events fast and store them in the inbox.

The request path only validates and stores (``webhook_events``); the events are handled by the
Strava webhook sensor, or, with a fast path (``fastpath.py``), by the receiver itself right
after the answer. Strava expects a 200 within two seconds and redelivers up to
three times otherwise, so a redelivery is stored once (``deliveries`` counts them).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import text
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from sync_pipeline.core.db import transaction
from sync_pipeline.core.models import WebhookEvent, utcnow

if TYPE_CHECKING:
    from sync_pipeline.webhooks.fastpath import FastPath

logger = logging.getLogger(__name__)

PROVIDER_STRAVA = "strava"
STRAVA_PATH = "/webhooks/strava"
OBJECT_TYPES = frozenset({"activity", "athlete"})
ASPECT_TYPES = frozenset({"create", "update", "delete"})
INT_FIELDS = ("object_id", "owner_id", "subscription_id", "event_time")

SubscriptionIds = Callable[[], set[int]] | set[int] | None


class PayloadError(ValueError):
    """A push payload that is not a valid Strava event; ``status`` is the HTTP answer."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class StravaEvent:
    """One validated Strava push event."""

    object_type: str
    object_id: int
    aspect_type: str
    owner_id: int
    subscription_id: int
    event_time: int
    updates: dict[str, str]

    @property
    def dedup_key(self) -> str:
        """Content hash identifying the event (Strava events carry no id)."""
        return dedup_key(self)


def canonical_json(value: Any) -> str:
    """JSON with sorted keys and no whitespace: equal values give equal text."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def dedup_key(event: StravaEvent) -> str:
    """sha256 of object_type|object_id|aspect_type|owner_id|event_time|canonical(updates)."""
    parts = [
        event.object_type,
        str(event.object_id),
        event.aspect_type,
        str(event.owner_id),
        str(event.event_time),
        canonical_json(event.updates),
    ]
    return hashlib.sha256("|".join(parts).encode("utf-8")).hexdigest()


def _is_int(value: Any) -> bool:
    return type(value) is int


def parse_strava_event(payload: Any) -> StravaEvent:
    """Validate a decoded JSON payload; raise ``PayloadError`` (422) when it is not an event."""
    if not isinstance(payload, dict):
        raise PayloadError(422, "the body must be a JSON object")
    missing = [f for f in ("object_type", "aspect_type", *INT_FIELDS) if f not in payload]
    if missing:
        raise PayloadError(422, f"missing fields: {', '.join(missing)}")
    object_type, aspect_type = payload["object_type"], payload["aspect_type"]
    if not isinstance(object_type, str) or object_type not in OBJECT_TYPES:
        raise PayloadError(422, f"object_type must be one of {sorted(OBJECT_TYPES)}")
    if not isinstance(aspect_type, str) or aspect_type not in ASPECT_TYPES:
        raise PayloadError(422, f"aspect_type must be one of {sorted(ASPECT_TYPES)}")
    for name in INT_FIELDS:
        if not _is_int(payload[name]):
            raise PayloadError(422, f"{name} must be an integer")
        if payload[name] < 0 or payload[name] >= 2**63:
            raise PayloadError(422, f"{name} is out of range")
    updates = payload.get("updates", {})
    if not isinstance(updates, dict) or not all(isinstance(v, str) for v in updates.values()):
        raise PayloadError(422, "updates must be an object with string values")
    return StravaEvent(
        object_type=object_type,
        object_id=payload["object_id"],
        aspect_type=aspect_type,
        owner_id=payload["owner_id"],
        subscription_id=payload["subscription_id"],
        event_time=payload["event_time"],
        updates=dict(updates),
    )


def _row(event: StravaEvent, provider: str) -> dict[str, Any]:
    return {
        "provider": provider,
        "dedup_key": event.dedup_key,
        "subscription_id": event.subscription_id,
        "object_type": event.object_type,
        "object_id": event.object_id,
        "aspect_type": event.aspect_type,
        "owner_id": event.owner_id,
        "event_time": event.event_time,
        "updates": event.updates,
        "received_at": utcnow(),
        "deliveries": 1,
    }


def store_events(db_url: str, events: list[StravaEvent], provider: str = PROVIDER_STRAVA) -> None:
    """Insert events into the inbox in one transaction and one statement; a redelivery of a
    stored event (or a repeat within the batch) only counts the delivery."""
    if not events:
        return
    rows: dict[str, dict[str, Any]] = {}
    for event in events:
        key = event.dedup_key
        if key in rows:
            rows[key]["deliveries"] += 1
        else:
            rows[key] = _row(event, provider)
    with transaction(db_url) as session:
        if session.get_bind().dialect.name == "postgresql":
            from sqlalchemy.dialects.postgresql import insert as pg_insert

            stmt: Any = pg_insert(WebhookEvent)
        else:
            from sqlalchemy.dialects.sqlite import insert as sqlite_insert

            stmt = sqlite_insert(WebhookEvent)
        stmt = stmt.on_conflict_do_update(
            index_elements=["provider", "dedup_key"],
            set_={"deliveries": WebhookEvent.deliveries + stmt.excluded.deliveries},
        )
        session.execute(stmt, list(rows.values()))


def store_event(db_url: str, event: StravaEvent, provider: str = PROVIDER_STRAVA) -> None:
    """Insert one event into the inbox (see `store_events`)."""
    store_events(db_url, [event], provider)


class InboxWriter:
    """Group commit: events arriving while a batch is being written go into the next batch,
    one transaction each, and every request is answered only after its batch committed.

    One insert transaction per request caps a receiver at ~100 events/s on SQLite; batching
    keeps the acknowledgement fast under bursts without acknowledging anything unstored.
    """

    def __init__(self, db_url: str, max_batch: int = 500) -> None:
        self.db_url = db_url
        self.max_batch = max_batch
        self._pending: list[tuple[StravaEvent, asyncio.Future[None]]] = []
        self._flushing = False

    async def store(self, event: StravaEvent) -> None:
        """Return once the event is committed (raises if its batch could not be)."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.append((event, future))
        if not self._flushing:
            self._flushing = True
            asyncio.get_running_loop().create_task(self._flush())
        await future

    async def _flush(self) -> None:
        try:
            while self._pending:
                batch, self._pending = (
                    self._pending[: self.max_batch],
                    self._pending[self.max_batch :],
                )
                try:
                    await run_in_threadpool(store_events, self.db_url, [e for e, _ in batch])
                except Exception as exc:  # every request of the batch gets the error
                    for _, future in batch:
                        if not future.done():
                            future.set_exception(exc)
                else:
                    for _, future in batch:
                        if not future.done():
                            future.set_result(None)
        finally:
            self._flushing = False


def check_database(db_url: str) -> None:
    """Raise unless the database answers ``SELECT 1``."""
    with transaction(db_url) as session:
        session.execute(text("SELECT 1"))


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status)


def _client(request: Request) -> str:
    return request.client.host if request.client else "?"


async def _read_limited(request: Request, limit: int) -> bytes:
    """The body, or ``PayloadError`` 413 as soon as it is known to exceed ``limit`` bytes."""
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            size = int(declared)
        except ValueError:
            raise PayloadError(400, "invalid Content-Length header") from None
        if size > limit:
            raise PayloadError(413, f"body larger than {limit} bytes")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise PayloadError(413, f"body larger than {limit} bytes")
    return bytes(body)


def _is_json(content_type: str) -> bool:
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json" or (
        media.startswith("application/") and media.endswith("+json")
    )


def create_webhook_app(
    db_url: str,
    verify_token: str,
    subscription_ids: SubscriptionIds,
    max_body_bytes: int = 16384,
    unsubscribe_key: str | None = None,
    fast_path: FastPath | None = None,
) -> Starlette:
    """The receiver: ``GET``/``POST /webhooks/strava`` and ``GET /healthz``; with an
    ``unsubscribe_key``, also outreach's one-click unsubscribe (``webhooks/unsubscribe.py``).

    ``subscription_ids``: the accepted Strava subscription ids (a set, or a callable returning
    one, called per event); ``None`` accepts any. Events of other subscriptions get a 403.
    ``fast_path``: processes committed activity events in the receiver (closed on shutdown).
    """
    if not verify_token:
        raise ValueError("verify_token must not be empty")
    if max_body_bytes < 1:
        raise ValueError("max_body_bytes must be positive")
    expected_token = verify_token.encode("utf-8")
    writer = InboxWriter(db_url)

    async def allowed_subscriptions() -> set[int] | None:
        if subscription_ids is None or isinstance(subscription_ids, set):
            return subscription_ids
        return await run_in_threadpool(subscription_ids)

    async def validate_subscription(request: Request) -> Response:
        q = request.query_params
        mode, token, challenge = (
            q.get("hub.mode"),
            q.get("hub.verify_token"),
            q.get("hub.challenge"),
        )
        if mode != "subscribe":
            logger.warning(
                "webhook validation from %s rejected: hub.mode is not subscribe", _client(request)
            )
            return _error(403, "hub.mode must be 'subscribe'")
        if token is None or not hmac.compare_digest(token.encode("utf-8"), expected_token):
            logger.warning(
                "webhook validation from %s rejected: verify token mismatch", _client(request)
            )
            return _error(403, "hub.verify_token does not match")
        if not challenge:
            return _error(400, "hub.challenge is missing")
        logger.info("webhook subscription validation answered for %s", _client(request))
        return JSONResponse({"hub.challenge": challenge})

    async def receive_event(request: Request) -> Response:
        try:
            if not _is_json(request.headers.get("content-type", "")):
                raise PayloadError(415, "Content-Type must be application/json")
            body = await _read_limited(request, max_body_bytes)
            try:
                payload = json.loads(body)
            except (ValueError, UnicodeDecodeError):
                raise PayloadError(400, "the body is not valid JSON") from None
            event = parse_strava_event(payload)
            allowed = await allowed_subscriptions()
            if allowed is not None and event.subscription_id not in allowed:
                raise PayloadError(403, "unknown subscription_id")
        except ClientDisconnect:
            logger.info("webhook event from %s: client went away mid-body", _client(request))
            return _error(400, "client disconnected")
        except PayloadError as exc:
            logger.warning(
                "webhook event from %s rejected (%d): %s",
                _client(request),
                exc.status,
                exc.message,
            )
            return _error(exc.status, exc.message)
        try:
            await writer.store(event)
        except Exception:
            # Not acknowledged: Strava redelivers, and the redelivery is stored once.
            logger.exception("webhook event could not be stored")
            return _error(503, "the event could not be stored; retry later")
        if fast_path is not None:
            # After the commit, before the answer: a dict insert, never a wait.
            fast_path.submit(event.object_type, event.owner_id, event.dedup_key)
        logger.debug(
            "webhook event stored: %s %s %d (owner %d)",
            event.object_type,
            event.aspect_type,
            event.object_id,
            event.owner_id,
        )
        return JSONResponse({"status": "received"})

    async def healthz(request: Request) -> Response:
        try:
            await run_in_threadpool(check_database, db_url)
        except Exception as exc:
            logger.error("health check: database unreachable (%s)", type(exc).__name__)
            return JSONResponse({"status": "unavailable", "error": "database unreachable"}, 503)
        return JSONResponse({"status": "ok"})

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        if fast_path is not None:
            fast_path.start()
        yield
        if fast_path is not None:  # SIGTERM / Ctrl-C: after the last request was answered
            await run_in_threadpool(fast_path.close)

    routes = [
        Route(STRAVA_PATH, validate_subscription, methods=["GET"]),
        Route(STRAVA_PATH, receive_event, methods=["POST"]),
        Route("/healthz", healthz, methods=["GET"]),
    ]
    if unsubscribe_key:
        from sync_pipeline.webhooks.unsubscribe import unsubscribe_routes

        routes.extend(unsubscribe_routes(db_url, unsubscribe_key))
    return Starlette(lifespan=lifespan, routes=routes)
