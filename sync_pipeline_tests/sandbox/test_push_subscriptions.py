"""Strava push subscriptions in the sandbox, end to end with the real webhook receiver."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from sqlalchemy import select
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from sync_pipeline.core.db import transaction
from sync_pipeline.core.models import WebhookEvent
from sync_pipeline.sandbox.server import SandboxServer
from sync_pipeline.sandbox.strava import StravaSandboxConfig, StravaSandboxState, create_app
from sync_pipeline.webhooks import create_webhook_app

CLIENT_ID = "12345"
SECRET = "sandbox-secret"
TOKEN = "push-verify-token"
SUBS = "/api/v3/push_subscriptions"
CREDS = {"client_id": CLIENT_ID, "client_secret": SECRET}
ALREADY_EXISTS = {
    "message": "Bad Request",
    "errors": [{"resource": "PushSubscription", "field": "", "code": "already exists"}],
}
NOT_VALIDATED = {
    "message": "Bad Request",
    "errors": [
        {
            "resource": "PushSubscription",
            "field": "callback url",
            "code": "GET to callback URL does not return 200",
        }
    ],
}


class FlakyAck:
    """ASGI wrapper answering 500 to the first ``failures`` POSTs.

    ``mode``: ``before`` fails without calling the receiver (nothing stored), ``after`` lets
    the receiver store the event and then replaces its answer, ``slow`` lets it store and
    holds its 200 back for ``delay`` seconds (past the sandbox's ack timeout).
    """

    def __init__(self, app: ASGIApp, failures: int, mode: str = "before", delay: float = 0.0):
        self.app = app
        self.failures = failures
        self.mode = mode
        self.delay = delay

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST" or self.failures <= 0:
            await self.app(scope, receive, send)
            return
        self.failures -= 1
        if self.mode == "before":
            await JSONResponse({"error": "injected failure"}, 500)(scope, receive, send)
            return

        async def spoil(message: Message) -> None:
            if message["type"] == "http.response.start":
                if self.mode == "slow":
                    await asyncio.sleep(self.delay)
                else:
                    message = {**message, "status": 500}
            await send(message)

        await self.app(scope, receive, spoil)


@dataclass
class Push:
    """A sandbox and a receiver, both on loopback, and the inbox behind the receiver."""

    state: StravaSandboxState
    sandbox_url: str
    receiver_url: str
    client: httpx.Client
    db_url: str
    subscription_ids: set[int] = field(default_factory=set)

    @property
    def callback(self) -> str:
        """The receiver's Strava webhook URL."""
        return self.receiver_url + "/webhooks/strava"

    def subscribe(self, verify_token: str = TOKEN, callback: str | None = None) -> httpx.Response:
        """POST /push_subscriptions (form-encoded, like Strava's docs)."""
        data = {**CREDS, "callback_url": callback or self.callback, "verify_token": verify_token}
        response = self.client.post(SUBS, data=data)
        if response.status_code == 201:
            self.subscription_ids.add(response.json()["id"])
        return response

    def inbox(self) -> list[tuple[str, int, str, int, dict[str, str], int]]:
        """(object_type, object_id, aspect_type, owner_id, updates, deliveries) per row."""
        with transaction(self.db_url) as session:
            rows = session.scalars(select(WebhookEvent).order_by(WebhookEvent.id))
            return [
                (r.object_type, r.object_id, r.aspect_type, r.owner_id, r.updates, r.deliveries)
                for r in rows
            ]


PushFactory = Callable[..., Push]


@pytest.fixture
def make_push(db_url: str) -> Iterator[PushFactory]:
    """Start a sandbox and a receiver (optionally wrapped); everything stopped after."""
    servers: list[SandboxServer] = []
    states: list[StravaSandboxState] = []
    clients: list[httpx.Client] = []

    def factory(wrap: Callable[[ASGIApp], ASGIApp] | None = None, **config: Any) -> Push:
        config = {"athletes": 2, "activity_counts": {0: 3, 1: 2}, "time_scale": 20.0, **config}
        state = StravaSandboxState(StravaSandboxConfig(**config))
        states.append(state)
        ids: set[int] = set()
        receiver: ASGIApp = create_webhook_app(db_url, TOKEN, lambda: ids)
        if wrap is not None:
            receiver = wrap(receiver)
        receiver_server = SandboxServer(receiver).start()
        servers.append(receiver_server)
        sandbox_server = SandboxServer(create_app(state)).start()
        servers.append(sandbox_server)
        client = httpx.Client(base_url=sandbox_server.url, timeout=10.0)
        clients.append(client)
        return Push(state, sandbox_server.url, receiver_server.url, client, db_url, ids)

    yield factory
    for state in states:
        state.close()
    for client in clients:
        client.close()
    for server in servers:
        server.stop()


@pytest.fixture
def push(make_push: PushFactory) -> Push:
    """Sandbox (athletes 1001, 1002) and receiver, no subscription yet."""
    return make_push()


def fresh_token(push: Push, athlete_id: int) -> str:
    """A new access token for the athlete (re-authorizes the app)."""
    return str(push.state.issue_tokens(athlete_id, "read,activity:read_all")["access_token"])


# ------------------------------------------------------------------ subscriptions


def test_subscription_lifecycle(push: Push) -> None:
    created = push.subscribe()
    assert created.status_code == 201, created.text
    sub_id = created.json()["id"]
    assert created.json() == {"id": sub_id}
    listed = push.client.get(SUBS, params=CREDS).json()
    assert [(s["id"], s["callback_url"], s["application_id"]) for s in listed] == [
        (sub_id, push.callback, int(CLIENT_ID))
    ]
    again = push.subscribe()
    assert (again.status_code, again.json()) == (400, ALREADY_EXISTS)
    assert push.client.delete(f"{SUBS}/{sub_id + 1}", params=CREDS).status_code == 404
    wrong = {**CREDS, "client_secret": "nope"}
    assert push.client.delete(f"{SUBS}/{sub_id}", params=wrong).status_code == 401
    deleted = push.client.delete(f"{SUBS}/{sub_id}", params=CREDS)
    assert (deleted.status_code, deleted.content) == (204, b"")
    assert push.client.get(SUBS, params=CREDS).json() == []
    assert push.client.delete(f"{SUBS}/{sub_id}", params=CREDS).status_code == 404
    renewed = push.subscribe()
    assert renewed.status_code == 201 and renewed.json()["id"] != sub_id
    stats = push.client.get("/_sandbox/stats").json()
    assert stats["requests_by_endpoint"]["POST /api/v3/push_subscriptions"] == 3


@pytest.mark.parametrize(
    ("creds", "status"),
    [({"client_id": "999", "client_secret": SECRET}, 400), ({**CREDS, "client_secret": "x"}, 401)],
    ids=["client-id", "secret"],
)
def test_subscription_needs_app_credentials(push: Push, creds: dict[str, str], status: int) -> None:
    data = {**creds, "callback_url": push.callback, "verify_token": TOKEN}
    assert push.client.post(SUBS, data=data).status_code == status
    assert push.client.get(SUBS, params=creds).status_code == status
    assert push.state.push_subscription_id() is None


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _callback_app(behaviour: str) -> Starlette:
    async def callback(request: Request) -> Response:
        if behaviour == "slow":
            await asyncio.sleep(1.0)
        challenge = request.query_params.get("hub.challenge", "")
        if behaviour == "wrong-challenge":
            challenge += "x"
        if behaviour == "not-json":
            return Response(challenge, media_type="text/plain")
        return JSONResponse({"hub.challenge": challenge})

    return Starlette(routes=[Route("/cb", callback, methods=["GET"])])


@pytest.mark.parametrize(
    "case", ["bad-token", "unreachable", "wrong-challenge", "not-json", "slow", "not-http"]
)
def test_subscription_requires_callback_validation(make_push: PushFactory, case: str) -> None:
    push = make_push(push_ack_timeout=0.5)
    token, callback = TOKEN, push.callback
    expected: dict[str, Any] = NOT_VALIDATED
    with SandboxServer(_callback_app(case)) as other:
        if case == "bad-token":
            token = "not-the-receivers-token"
        elif case == "unreachable":
            callback = f"http://127.0.0.1:{_closed_port()}/webhooks/strava"
        elif case == "not-http":
            callback = "ftp://example.com/cb"
            expected = {
                "message": "Bad Request",
                "errors": [
                    {"resource": "PushSubscription", "field": "callback_url", "code": "invalid"}
                ],
            }
        else:
            callback = other.url + "/cb"
        response = push.subscribe(verify_token=token, callback=callback)
    assert (response.status_code, response.json()) == (400, expected)
    assert push.client.get(SUBS, params=CREDS).json() == []


# ------------------------------------------------------------------------- events


def test_data_changes_are_delivered_into_the_inbox(push: Push) -> None:
    push.state.issue_tokens(1001, "read,activity:read_all")
    push.state.add_activities(1001)  # before the subscription: no event
    assert push.subscribe().status_code == 201
    access = push.state.issue_tokens(1001, "read,activity:read_all")["access_token"]
    control = push.client.post("/_sandbox/athletes/1001/activities", json={"count": 2})
    first, second = control.json()["ids"]
    push.state.add_activities(1002)  # 1002 never authorized the app: no event
    patched = push.client.patch(
        f"/_sandbox/activities/{first}", json={"name": "Lunch Ride", "private": True}
    )
    assert patched.status_code == 200
    new_type = "Run" if patched.json()["type"] == "Ride" else "Ride"
    push.state.update_activity(first, type=new_type, description="not a pushed field")
    push.state.update_activity(first, description="only this: no event")
    push.state.delete_activity(second)
    revoked = push.client.post("/oauth/deauthorize", data={"access_token": access})
    assert revoked.status_code == 200
    push.state.add_activities(1001)  # deauthorized: no event
    assert push.state.wait_for_push_deliveries(timeout=15.0)
    # One worker delivers in order, so the inbox holds the events in the order they happened.
    assert push.inbox() == [
        ("activity", first, "create", 1001, {}, 1),
        ("activity", second, "create", 1001, {}, 1),
        ("activity", first, "update", 1001, {"title": "Lunch Ride", "private": "true"}, 1),
        ("activity", first, "update", 1001, {"type": new_type}, 1),
        ("activity", second, "delete", 1001, {}, 1),
        ("athlete", 1001, "update", 1001, {"authorized": "false"}, 1),
    ]
    detail = push.client.get(
        f"/api/v3/activities/{first}",
        headers={"Authorization": f"Bearer {fresh_token(push, 1001)}"},
    ).json()
    assert (detail["name"], detail["type"], detail["private"]) == ("Lunch Ride", new_type, True)
    stats = push.client.get("/_sandbox/stats").json()["push"]
    assert stats == {"delivered": 6, "redelivered": 0, "failed": 0, "dropped": 0, "pending": 0}


@pytest.mark.parametrize(
    ("scope", "updates"),
    [
        ("read,activity:read_all", {"title": "Hidden", "private": "true"}),
        ("read,activity:read", {"title": "Hidden"}),
    ],
)
def test_privacy_updates_need_read_all(push: Push, scope: str, updates: dict[str, str]) -> None:
    push.state.issue_tokens(1002, scope)
    activity = push.state.activity_ids(1002)[0]
    assert push.subscribe().status_code == 201
    push.state.update_activity(activity, private=True, name="Hidden")
    push.state.update_activity(activity, private=False)  # privacy alone
    assert push.state.wait_for_push_deliveries(timeout=15.0)
    expected = [("activity", activity, "update", 1002, updates, 1)]
    if "private" in updates:
        expected.append(("activity", activity, "update", 1002, {"private": "false"}, 1))
    assert push.inbox() == expected


@pytest.mark.parametrize(
    ("mode", "deliveries"),
    [("before", 1), ("after", 2), ("slow", 2)],
    ids=["500-not-stored", "500-after-store", "ack-too-slow"],
)
def test_missed_ack_is_redelivered_and_stored_once(
    make_push: PushFactory, mode: str, deliveries: int
) -> None:
    push = make_push(
        wrap=lambda app: FlakyAck(app, failures=1, mode=mode, delay=0.8), push_ack_timeout=0.5
    )
    push.state.issue_tokens(1001)
    assert push.subscribe().status_code == 201
    [activity] = push.state.add_activities(1001)
    assert push.state.wait_for_push_deliveries(timeout=15.0)
    assert push.inbox() == [("activity", activity, "create", 1001, {}, deliveries)]
    assert push.state.push_stats() == {
        "delivered": 1,
        "redelivered": 1,
        "failed": 0,
        "dropped": 0,
        "pending": 0,
    }


def test_delivery_gives_up_after_three_attempts(make_push: PushFactory) -> None:
    push = make_push(wrap=lambda app: FlakyAck(app, failures=3))
    push.state.issue_tokens(1001)
    assert push.subscribe().status_code == 201
    push.state.add_activities(1001)
    assert push.state.wait_for_push_deliveries(timeout=15.0)
    assert push.inbox() == []
    stats = push.state.push_stats()
    assert (stats["delivered"], stats["redelivered"], stats["failed"]) == (0, 2, 1)
    # The next event is delivered normally: the fourth POST succeeds.
    [activity] = push.state.add_activities(1001)
    assert push.state.wait_for_push_deliveries(timeout=15.0)
    assert push.inbox() == [("activity", activity, "create", 1001, {}, 1)]


def test_no_events_without_subscription(push: Push) -> None:
    push.state.issue_tokens(1001)
    push.state.add_activities(1001)
    sub_id = push.subscribe().json()["id"]
    assert push.client.delete(f"{SUBS}/{sub_id}", params=CREDS).status_code == 204
    push.state.add_activities(1001)
    assert push.state.wait_for_push_deliveries(timeout=5.0)
    assert push.inbox() == []
    assert push.state.push_stats()["delivered"] == 0
