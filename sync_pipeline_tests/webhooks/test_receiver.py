"""Tests of the webhook receiver over real HTTP on loopback: validate, store once, ack fast."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from sync_pipeline.core import db
from sync_pipeline.core.db import transaction
from sync_pipeline.core.models import WebhookEvent
from sync_pipeline.sandbox.server import SandboxServer
from sync_pipeline.webhooks import StravaEvent, create_webhook_app, dedup_key
from sync_pipeline.webhooks.app import SubscriptionIds, parse_strava_event, store_events

TOKEN = "verify-me-0123456789"
SUB_ID = 120475
PATH = "/webhooks/strava"
MAX_BODY = 16384


def make_event(**overrides: Any) -> dict[str, Any]:
    """A valid Strava push event, with fields replaced or (value ``...``) removed."""
    event: dict[str, Any] = {
        "aspect_type": "create",
        "event_time": 1_750_000_000,
        "object_id": 10010000001,
        "object_type": "activity",
        "owner_id": 1001,
        "subscription_id": SUB_ID,
        "updates": {},
    }
    event.update(overrides)
    return {k: v for k, v in event.items() if v is not ...}


def stored(db_url: str) -> list[WebhookEvent]:
    """Every row of the inbox, oldest first."""
    with transaction(db_url) as session:
        return list(session.scalars(select(WebhookEvent).order_by(WebhookEvent.id)))


@dataclass
class Receiver:
    """A running receiver and an HTTP client pointed at it."""

    url: str
    client: httpx.Client

    def post(self, payload: Any) -> httpx.Response:
        """POST a JSON payload to the Strava webhook path."""
        return self.client.post(PATH, json=payload)


ReceiverFactory = Callable[..., Receiver]


@pytest.fixture
def make_receiver(db_url: str) -> Iterator[ReceiverFactory]:
    """Start receivers (on the test database unless ``url`` is given); all stopped after."""
    opened: list[tuple[SandboxServer, httpx.Client]] = []

    def factory(subscription_ids: SubscriptionIds, url: str | None = None) -> Receiver:
        app = create_webhook_app(url or db_url, TOKEN, subscription_ids, max_body_bytes=MAX_BODY)
        server = SandboxServer(app).start()
        client = httpx.Client(base_url=server.url, timeout=10.0)
        opened.append((server, client))
        return Receiver(server.url, client)

    yield factory
    for server, client in opened:
        client.close()
        server.stop()


@pytest.fixture
def receiver(make_receiver: ReceiverFactory) -> Receiver:
    """The receiver accepting subscription SUB_ID."""
    return make_receiver({SUB_ID})


# ------------------------------------------------------------------ validation GET


@pytest.mark.parametrize(
    ("params", "status", "body"),
    [
        (
            {"hub.mode": "subscribe", "hub.verify_token": TOKEN, "hub.challenge": "c-123"},
            200,
            {"hub.challenge": "c-123"},
        ),
        (
            {"hub.mode": "subscribe", "hub.verify_token": "wrong", "hub.challenge": "c-123"},
            403,
            {"error": "hub.verify_token does not match"},
        ),
        (
            {"hub.mode": "subscribe", "hub.verify_token": TOKEN[:-1], "hub.challenge": "c"},
            403,
            {"error": "hub.verify_token does not match"},
        ),
        (
            {"hub.mode": "subscribe", "hub.challenge": "c-123"},
            403,
            {"error": "hub.verify_token does not match"},
        ),
        (
            {"hub.mode": "unsubscribe", "hub.verify_token": TOKEN, "hub.challenge": "c-123"},
            403,
            {"error": "hub.mode must be 'subscribe'"},
        ),
        ({}, 403, {"error": "hub.mode must be 'subscribe'"}),
        (
            {"hub.mode": "subscribe", "hub.verify_token": TOKEN},
            400,
            {"error": "hub.challenge is missing"},
        ),
    ],
    ids=["good", "bad", "prefix", "missing", "mode", "empty", "no-challenge"],
)
def test_subscription_validation(
    receiver: Receiver, params: dict[str, str], status: int, body: dict[str, str]
) -> None:
    response = receiver.client.get(PATH, params=params)
    assert response.status_code == status
    assert response.json() == body


def test_empty_verify_token_is_refused(db_url: str) -> None:
    with pytest.raises(ValueError, match="verify_token"):
        create_webhook_app(db_url, "", None)


# ------------------------------------------------------------------------ events


def test_valid_event_is_stored_and_acknowledged(db_url: str, receiver: Receiver) -> None:
    payload = make_event(aspect_type="update", updates={"title": "Morning Ride"})
    response = receiver.post(payload)
    assert response.status_code == 200
    assert response.json() == {"status": "received"}
    [row] = stored(db_url)
    assert (row.provider, row.subscription_id, row.object_type, row.aspect_type) == (
        "strava",
        SUB_ID,
        "activity",
        "update",
    )
    assert (row.object_id, row.owner_id, row.event_time) == (10010000001, 1001, 1_750_000_000)
    assert row.updates == {"title": "Morning Ride"}
    assert row.deliveries == 1
    assert row.received_at is not None
    assert (row.handled_at, row.run_key, row.outcome) == (None, None, None)
    event = StravaEvent(**payload)
    assert row.dedup_key == dedup_key(event) and len(row.dedup_key) == 64


def _raw(body: bytes, content_type: str | None = "application/json") -> dict[str, Any]:
    headers = {} if content_type is None else {"Content-Type": content_type}
    return {"content": body, "headers": headers}


def _json(payload: Any) -> dict[str, Any]:
    return _raw(json.dumps(payload).encode())


REJECTED: list[tuple[str, dict[str, Any], int, str]] = [
    ("not-json", _raw(b"{not json"), 400, "not valid JSON"),
    ("not-utf8", _raw(b'{"a": "\xff\xfe"}'), 400, "not valid JSON"),
    ("empty-body", _raw(b""), 400, "not valid JSON"),
    ("array", _json([make_event()]), 422, "JSON object"),
    ("string", _json("event"), 422, "JSON object"),
    ("missing-object-id", _json(make_event(object_id=...)), 422, "missing fields: object_id"),
    ("missing-owner", _json(make_event(owner_id=...)), 422, "missing fields: owner_id"),
    ("object-type", _json(make_event(object_type="segment")), 422, "object_type"),
    ("object-type-int", _json(make_event(object_type=1)), 422, "object_type"),
    ("aspect-type", _json(make_event(aspect_type="patch")), 422, "aspect_type"),
    ("id-as-string", _json(make_event(object_id="10010000001")), 422, "object_id"),
    ("id-as-float", _json(make_event(object_id=1.0)), 422, "object_id"),
    ("owner-as-bool", _json(make_event(owner_id=True)), 422, "owner_id"),
    ("time-null", _json(make_event(event_time=None)), 422, "event_time"),
    ("negative-id", _json(make_event(object_id=-5)), 422, "object_id"),
    ("huge-id", _json(make_event(object_id=2**64)), 422, "object_id"),
    ("sub-as-string", _json(make_event(subscription_id=str(SUB_ID))), 422, "subscription_id"),
    ("updates-list", _json(make_event(updates=["title"])), 422, "updates"),
    ("updates-null", _json(make_event(updates=None)), 422, "updates"),
    ("updates-bool", _json(make_event(updates={"private": True})), 422, "updates"),
    ("form", _raw(b"object_id=1", "application/x-www-form-urlencoded"), 415, "Content-Type"),
    ("text", _raw(json.dumps(make_event()).encode(), "text/plain"), 415, "Content-Type"),
    ("no-type", _raw(json.dumps(make_event()).encode(), None), 415, "Content-Type"),
    ("oversized", _json(make_event(pad="x" * MAX_BODY)), 413, "larger than"),
    ("foreign", _json(make_event(subscription_id=SUB_ID + 1)), 403, "unknown subscription"),
]


@pytest.mark.parametrize(
    ("request_kwargs", "status", "message"),
    [r[1:] for r in REJECTED],
    ids=[r[0] for r in REJECTED],
)
def test_bad_payloads_are_rejected_and_not_stored(
    db_url: str, receiver: Receiver, request_kwargs: dict[str, Any], status: int, message: str
) -> None:
    response = receiver.client.post(PATH, **request_kwargs)
    assert response.status_code == status, response.text
    assert message in response.json()["error"]
    assert stored(db_url) == []
    # The receiver still works afterwards.
    assert receiver.post(make_event()).status_code == 200
    assert len(stored(db_url)) == 1


def test_streamed_oversized_body_is_cut_off(db_url: str, receiver: Receiver) -> None:
    chunk = b" " * 4096

    def body() -> Iterator[bytes]:
        yield b'{"object_type": "activity",'
        for _ in range(8):  # 32 KiB of whitespace, no Content-Length (chunked)
            yield chunk
        yield b"}"

    response = receiver.client.post(
        PATH, content=body(), headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 413
    assert "content-length" not in response.request.headers
    assert stored(db_url) == []


def test_body_at_the_limit_is_accepted(db_url: str, receiver: Receiver) -> None:
    raw = json.dumps(make_event()).encode()
    padded = raw[:-1] + b" " * (MAX_BODY - len(raw)) + b"}"
    assert len(padded) == MAX_BODY
    response = receiver.client.post(
        PATH, content=padded, headers={"Content-Type": "application/json; charset=utf-8"}
    )
    assert response.status_code == 200
    assert len(stored(db_url)) == 1


def test_redelivered_event_is_stored_once(db_url: str, receiver: Receiver) -> None:
    first = make_event(aspect_type="update", updates={"title": "A", "type": "Ride"})
    # Same event, keys in another order: the same content, so the same dedup key.
    again = dict(reversed(list(first.items())))
    again["updates"] = {"type": "Ride", "title": "A"}
    later = make_event(aspect_type="update", updates={"title": "A", "type": "Ride"})
    later["event_time"] += 1
    for payload in (first, again, later):
        assert receiver.post(payload).status_code == 200
    rows = stored(db_url)
    assert [(r.event_time, r.deliveries) for r in rows] == [
        (1_750_000_000, 2),
        (1_750_000_001, 1),
    ]


def test_a_batch_with_repeats_and_redeliveries_is_one_row_per_event(db_url: str) -> None:
    """Group commit writes a batch in one statement: repeats inside it count as deliveries."""
    a = parse_strava_event(make_event(object_id=1))
    b = parse_strava_event(make_event(object_id=2))
    store_events(db_url, [a])
    store_events(db_url, [a, b, b, a, b])
    assert sorted((r.object_id, r.deliveries) for r in stored(db_url)) == [(1, 3), (2, 3)]


@pytest.mark.parametrize("kind", ["callable", "none"])
def test_subscription_ids_callable_or_none(
    db_url: str, make_receiver: ReceiverFactory, kind: str
) -> None:
    allowed: set[int] = set()
    receiver = make_receiver(lambda: allowed) if kind == "callable" else make_receiver(None)
    response = receiver.post(make_event(subscription_id=77))
    if kind == "callable":
        assert response.status_code == 403
        allowed.add(77)  # consulted per event: a new subscription is accepted at once
        response = receiver.post(make_event(subscription_id=77))
    assert response.status_code == 200
    assert [r.subscription_id for r in stored(db_url)] == [77]


def test_ack_never_waits_on_processing(db_url: str, receiver: Receiver) -> None:
    """Behaviour check, not a benchmark: every ack is a store, far inside Strava's 2 s."""
    latencies: list[float] = []
    for n in range(200):
        payload = make_event(object_id=10010000000 + n, event_time=1_750_000_000 + n)
        started = time.perf_counter()
        response = receiver.post(payload)
        latencies.append(time.perf_counter() - started)
        assert response.status_code == 200
    assert max(latencies) < 0.5, f"slowest ack {max(latencies):.3f} s"
    rows = stored(db_url)
    assert len(rows) == 200
    assert all(r.handled_at is None and r.run_key is None and r.outcome is None for r in rows)


def test_event_that_cannot_be_stored_is_not_acknowledged(
    tmp_path: Path, make_receiver: ReceiverFactory
) -> None:
    unmigrated = f"sqlite:///{tmp_path / 'empty.db'}"  # no webhook_events table
    receiver = make_receiver({SUB_ID}, url=unmigrated)
    response = receiver.post(make_event())
    assert response.status_code == 503
    assert "could not be stored" in response.json()["error"]


# ------------------------------------------------------------------------ health


def test_health_ok(receiver: Receiver) -> None:
    response = receiver.client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_health_503_when_database_unreachable(make_receiver: ReceiverFactory) -> None:
    url = f"postgresql://nobody:secret@127.0.0.1:{_closed_port()}/nothing"
    receiver = make_receiver({SUB_ID}, url=url)
    try:
        response = receiver.client.get("/healthz")
        assert response.status_code == 503
        assert response.json()["status"] == "unavailable"
        assert "secret" not in response.text
    finally:
        db.dispose_engines()
