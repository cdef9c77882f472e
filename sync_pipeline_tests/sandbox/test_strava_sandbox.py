"""Tests of the Strava sandbox over real HTTP on loopback."""

from __future__ import annotations

import asyncio
import calendar
import itertools
import math
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from sync_pipeline.sandbox.server import SandboxServer
from sync_pipeline.sandbox.strava import (
    ManualClock,
    StravaSandboxConfig,
    StravaSandboxState,
    create_app,
)
from sync_pipeline_tests.serving import SlotServer

START = 1_750_000_000.0  # 2025-06-15T15:06:40Z, 400 s into a 15-minute window
CLIENT_ID = "12345"
SECRET = "sandbox-secret"
REDIRECT = "http://localhost:8765/callback"


@dataclass
class Sandbox:
    """A running sandbox plus an HTTP client pointed at it."""

    state: StravaSandboxState
    server: SandboxServer
    client: httpx.Client
    clock: ManualClock

    def login(
        self, athlete_id: int | None = None, scope: str = "read,activity:read_all"
    ) -> dict[str, Any]:
        """Run the OAuth code flow over HTTP and return the token response."""
        params = {
            "client_id": CLIENT_ID,
            "redirect_uri": REDIRECT,
            "response_type": "code",
            "approval_prompt": "auto",
            "scope": scope,
            "state": "st",
        }
        if athlete_id is not None:
            params["sandbox_athlete_id"] = str(athlete_id)
        redirect = self.client.get("/oauth/authorize", params=params)
        assert redirect.status_code == 302, redirect.text
        code = parse_qs(urlsplit(redirect.headers["location"]).query)["code"][0]
        response = self.client.post(
            "/oauth/token",
            data={
                "client_id": CLIENT_ID,
                "client_secret": SECRET,
                "code": code,
                "grant_type": "authorization_code",
            },
        )
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    def get(self, path: str, token: str, **params: Any) -> httpx.Response:
        """GET an API path with a bearer token."""
        return self.client.get(path, params=params, headers={"Authorization": f"Bearer {token}"})


SandboxFactory = Callable[..., Sandbox]


@pytest.fixture
def make_sandbox(served: SlotServer) -> Iterator[SandboxFactory]:
    """Factory of sandboxes (state + app on the module's server + client), unplugged after."""

    def factory(**config: Any) -> Sandbox:
        clock = ManualClock(START)
        config.setdefault("anchor_epoch", START)
        state = StravaSandboxState(StravaSandboxConfig(**config), now=clock)
        return Sandbox(state, served.server, served.plug(create_app(state)), clock)

    yield factory
    served.unplug()


@pytest.fixture
def sandbox(make_sandbox: SandboxFactory) -> Sandbox:
    """A default sandbox with three small athletes."""
    return make_sandbox(athletes=3, activity_counts={0: 40, 1: 5, 2: 0})


AUTH_ERROR = {
    "message": "Authorization Error",
    "errors": [{"resource": "Athlete", "field": "access_token", "code": "invalid"}],
}
RATE_ERROR = {
    "message": "Rate Limit Exceeded",
    "errors": [{"resource": "Application", "field": "rate limit", "code": "exceeded"}],
}
NOT_FOUND = {
    "message": "Record Not Found",
    "errors": [{"resource": "Activity", "field": "id", "code": "invalid"}],
}
BAD_REFRESH = {
    "message": "Bad Request",
    "errors": [{"resource": "RefreshToken", "field": "refresh_token", "code": "invalid"}],
}


def _all_pages(sb: Sandbox, token: str, per_page: int, **params: Any) -> list[list[int]]:
    pages: list[list[int]] = []
    page = 1
    while True:
        response = sb.get(
            "/api/v3/athlete/activities", token, page=page, per_page=per_page, **params
        )
        assert response.status_code == 200, response.text
        ids = [a["id"] for a in response.json()]
        if not ids:
            return pages
        pages.append(ids)
        page += 1


# --------------------------------------------------------------------------- server


def test_server_binds_real_port_serves_and_stops() -> None:
    async def hello(request: Request) -> PlainTextResponse:
        return PlainTextResponse("hi")

    server = SandboxServer(Starlette(routes=[Route("/", hello)]))
    with server:
        assert server.port > 0
        assert server.url == f"http://127.0.0.1:{server.port}"
        assert server.running
        assert httpx.get(server.url + "/").text == "hi"
        url = server.url
    assert not server.running
    with pytest.raises(httpx.ConnectError):
        httpx.get(url + "/", timeout=2.0)


def test_server_port_in_use_raises() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        server = SandboxServer(Starlette(), port=taken.getsockname()[1])
        with pytest.raises(OSError):
            server.start()


# ------------------------------------------------------------------------ pagination


@pytest.mark.parametrize("count", [0, 1, 200, 201, 2500])
def test_pagination_exact(make_sandbox: SandboxFactory, count: int) -> None:
    sb = make_sandbox(
        athletes=1, activity_counts={0: 0}, read_limit_15min=1000, overall_limit_15min=1000
    )
    athlete_id = sb.state.add_athlete(count)
    token = sb.login(athlete_id)["access_token"]
    pages = _all_pages(sb, token, per_page=200)
    assert len(pages) == math.ceil(count / 200)
    assert all(len(p) == 200 for p in pages[:-1])
    flat = [i for p in pages for i in p]
    assert len(flat) == len(set(flat)) == count
    assert flat == sb.state.activity_ids(athlete_id)
    starts = [sb.state.activity_start(i) for i in flat]
    assert all(a > b for a, b in itertools.pairwise(starts))


@pytest.mark.parametrize(
    ("per_page", "expected"), [(None, 30), (1, 1), (50, 50), (200, 200), (201, 200), (1000, 200)]
)
def test_per_page_default_and_cap(
    make_sandbox: SandboxFactory, per_page: int | None, expected: int
) -> None:
    sb = make_sandbox(athletes=1, activity_counts={0: 250})
    token = sb.login(1001)["access_token"]
    params = {} if per_page is None else {"per_page": per_page}
    response = sb.get("/api/v3/athlete/activities", token, **params)
    assert len(response.json()) == expected
    second = sb.get("/api/v3/athlete/activities", token, page=2, **params).json()
    assert second[0]["id"] == sb.state.activity_ids(1001)[expected]


@pytest.mark.parametrize("mode", ["before", "after", "both"])
def test_before_after_are_exclusive_filters(sandbox: Sandbox, mode: str) -> None:
    token = sandbox.login(1001)["access_token"]
    ids = sandbox.state.activity_ids(1001)
    starts = {i: sandbox.state.activity_start(i) for i in ids}
    hi, lo = starts[ids[5]], starts[ids[30]]
    params: dict[str, int] = {}
    if mode in ("before", "both"):
        params["before"] = hi
    if mode in ("after", "both"):
        params["after"] = lo
    got = [
        a["id"]
        for a in sandbox.get("/api/v3/athlete/activities", token, per_page=200, **params).json()
    ]
    expected = [
        i
        for i in ids
        if (mode == "after" or starts[i] < hi) and (mode == "before" or starts[i] > lo)
    ]
    assert got == expected
    assert len(got) == {"before": 34, "after": 30, "both": 24}[mode]
    assert (ids[5] in got) is (mode == "after")
    assert (ids[30] in got) is (mode == "before")


# ----------------------------------------------------------------------------- OAuth


def test_oauth_code_flow_end_to_end(sandbox: Sandbox) -> None:
    redirect = sandbox.client.get(
        "/oauth/authorize",
        params={
            "client_id": CLIENT_ID,
            "redirect_uri": REDIRECT + "?keep=1",
            "response_type": "code",
            "scope": "activity:read_all,profile:read_all",
            "state": "abc",
        },
    )
    assert redirect.status_code == 302
    location = urlsplit(redirect.headers["location"])
    assert location.netloc == "localhost:8765" and location.path == "/callback"
    query = parse_qs(location.query)
    assert query["state"] == ["abc"] and query["keep"] == ["1"]
    assert query["scope"] == ["read,profile:read_all,activity:read_all"]
    token = sandbox.client.post(
        "/oauth/token",
        data={
            "client_id": CLIENT_ID,
            "client_secret": SECRET,
            "code": query["code"][0],
            "grant_type": "authorization_code",
        },
    )
    assert token.status_code == 200
    body = token.json()
    assert body["token_type"] == "Bearer"
    assert body["athlete"]["id"] == 1001  # lowest not-yet-authorized athlete
    assert body["expires_at"] == int(START + 21600)
    assert body["expires_in"] == 21600
    me = sandbox.get("/api/v3/athlete", body["access_token"])
    assert me.status_code == 200
    assert me.json()["id"] == 1001 and me.json()["resource_state"] == 3
    assert sandbox.login()["athlete"]["id"] == 1002


def test_oauth_token_accepts_json_and_code_is_single_use(sandbox: Sandbox) -> None:
    redirect = sandbox.client.get(
        "/oauth/authorize",
        params={"client_id": CLIENT_ID, "redirect_uri": REDIRECT, "response_type": "code"},
    )
    query = parse_qs(urlsplit(redirect.headers["location"]).query)
    assert query["scope"] == ["read"]
    payload = {
        "client_id": CLIENT_ID,
        "client_secret": SECRET,
        "code": query["code"][0],
        "grant_type": "authorization_code",
    }
    assert sandbox.client.post("/oauth/token", json=payload).status_code == 200
    again = sandbox.client.post("/oauth/token", json=payload)
    assert again.status_code == 400
    assert again.json()["errors"][0] == {
        "resource": "AuthorizationCode",
        "field": "code",
        "code": "invalid",
    }


def test_oauth_code_expires_after_ten_minutes(sandbox: Sandbox) -> None:
    redirect = sandbox.client.get(
        "/oauth/authorize",
        params={"client_id": CLIENT_ID, "redirect_uri": REDIRECT, "response_type": "code"},
    )
    code = parse_qs(urlsplit(redirect.headers["location"]).query)["code"][0]
    sandbox.clock.advance(601)
    response = sandbox.client.post(
        "/oauth/token",
        data={
            "client_id": CLIENT_ID,
            "client_secret": SECRET,
            "code": code,
            "grant_type": "authorization_code",
        },
    )
    assert response.status_code == 400


def test_refresh_rotates_and_invalidates_old_token(sandbox: Sandbox) -> None:
    first = sandbox.login(1001)
    form = {"client_id": CLIENT_ID, "client_secret": SECRET, "grant_type": "refresh_token"}
    sandbox.clock.advance(3600)  # 5 h left: Strava hands back the same access token
    second = sandbox.client.post(
        "/oauth/token", data={**form, "refresh_token": first["refresh_token"]}
    )
    assert second.status_code == 200
    body = second.json()
    assert "athlete" not in body
    assert body["refresh_token"] != first["refresh_token"]
    assert body["access_token"] == first["access_token"]
    assert body["expires_at"] == first["expires_at"]
    reuse = sandbox.client.post(
        "/oauth/token", data={**form, "refresh_token": first["refresh_token"]}
    )
    assert reuse.status_code == 400
    assert reuse.json() == BAD_REFRESH
    sandbox.clock.advance(4 * 3600 + 1)  # under 1 h left: a fresh access token
    third = sandbox.client.post(
        "/oauth/token", data={**form, "refresh_token": body["refresh_token"]}
    )
    assert third.status_code == 200
    assert third.json()["access_token"] != first["access_token"]
    assert third.json()["expires_at"] == int(sandbox.clock() + 21600)
    assert sandbox.get("/api/v3/athlete", third.json()["access_token"]).status_code == 200
    assert sandbox.client.get("/_sandbox/stats").json()["refreshes"] == 2


@pytest.mark.parametrize(
    ("client_id", "secret", "status", "field"),
    [
        (CLIENT_ID, "wrong", 401, "client_secret"),
        ("999", SECRET, 400, "client_id"),
    ],
)
def test_token_rejects_bad_client_credentials(
    sandbox: Sandbox, client_id: str, secret: str, status: int, field: str
) -> None:
    tokens = sandbox.login(1001)
    response = sandbox.client.post(
        "/oauth/token",
        data={
            "client_id": client_id,
            "client_secret": secret,
            "grant_type": "refresh_token",
            "refresh_token": tokens["refresh_token"],
        },
    )
    assert response.status_code == status
    assert response.json() == {
        "message": "Bad Request",
        "errors": [{"resource": "Application", "field": field, "code": "invalid"}],
    }


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"client_id": "nope", "response_type": "code"}, "client_id"),
        ({"client_id": CLIENT_ID, "response_type": "token"}, "response_type"),
        ({"client_id": CLIENT_ID, "response_type": "code", "scope": "everything"}, "scope"),
    ],
)
def test_authorize_rejects_bad_requests(
    sandbox: Sandbox, params: dict[str, str], field: str
) -> None:
    response = sandbox.client.get("/oauth/authorize", params={"redirect_uri": REDIRECT, **params})
    assert response.status_code == 400
    assert response.json()["message"] == "Bad Request"
    assert response.json()["errors"][0]["field"] == field


def test_authorize_denied_redirects_with_error(sandbox: Sandbox) -> None:
    response = sandbox.client.get(
        "/oauth/authorize",
        params={
            "client_id": CLIENT_ID,
            "redirect_uri": REDIRECT,
            "response_type": "code",
            "state": "s1",
            "sandbox_deny": "true",
        },
    )
    assert response.status_code == 302
    assert parse_qs(urlsplit(response.headers["location"]).query) == {
        "state": ["s1"],
        "error": ["access_denied"],
    }


def test_expired_access_token_is_rejected(sandbox: Sandbox) -> None:
    token = sandbox.login(1001)["access_token"]
    assert sandbox.get("/api/v3/athlete", token).status_code == 200
    sandbox.clock.advance(21600)
    response = sandbox.get("/api/v3/athlete", token)
    assert response.status_code == 401
    assert response.json() == AUTH_ERROR
    assert response.headers["X-RateLimit-Usage"] == "1,2"  # new 15-min window, same day


def test_token_lifetime_is_scaled(make_sandbox: SandboxFactory) -> None:
    sb = make_sandbox(athletes=1, time_scale=3600.0)
    body = sb.login(1001)
    assert body["expires_in"] == 6
    assert body["expires_at"] == int(START + 6)


@pytest.mark.parametrize("auth", ["missing", "garbage"])
def test_missing_or_invalid_token_is_401(sandbox: Sandbox, auth: str) -> None:
    headers = {} if auth == "missing" else {"Authorization": "Bearer nope"}
    response = sandbox.client.get("/api/v3/athlete/activities", headers=headers)
    assert response.status_code == 401
    assert response.json() == AUTH_ERROR
    assert response.headers["X-ReadRateLimit-Usage"] == "1,1"


def test_scopes_gate_activities_and_private_ones(sandbox: Sandbox) -> None:
    read_only = sandbox.login(1001, scope="read")["access_token"]
    denied = sandbox.get("/api/v3/athlete/activities", read_only)
    assert denied.status_code == 401
    assert denied.json() == {
        "message": "Authorization Error",
        "errors": [
            {"resource": "AccessToken", "field": "activity:read_permission", "code": "missing"}
        ],
    }
    public_token = sandbox.login(1001, scope="activity:read")["access_token"]
    all_token = sandbox.login(1001, scope="activity:read_all")["access_token"]
    public = sandbox.get("/api/v3/athlete/activities", public_token, per_page=200).json()
    everything = sandbox.get("/api/v3/athlete/activities", all_token, per_page=200).json()
    assert len(everything) == 40
    assert [a["id"] for a in public] == sandbox.state.activity_ids(1001, include_private=False)
    assert not any(a["private"] for a in public)
    private_ids = [a["id"] for a in everything if a["private"]]
    assert private_ids, "seed 42 should produce at least one private activity"
    assert sandbox.get(f"/api/v3/activities/{private_ids[0]}", public_token).status_code == 404
    assert sandbox.get(f"/api/v3/activities/{private_ids[0]}", all_token).status_code == 200


def test_deauthorize_revokes_all_tokens(sandbox: Sandbox) -> None:
    tokens = sandbox.login(1001)
    response = sandbox.client.post(
        "/oauth/deauthorize", data={"access_token": tokens["access_token"]}
    )
    assert response.status_code == 200
    assert response.json() == {"access_token": tokens["access_token"]}
    assert sandbox.get("/api/v3/athlete", tokens["access_token"]).status_code == 401
    refresh = sandbox.client.post(
        "/oauth/token",
        data={
            "client_id": CLIENT_ID,
            "client_secret": SECRET,
            "grant_type": "refresh_token",
            "refresh_token": tokens["refresh_token"],
        },
    )
    assert refresh.status_code == 400
    athletes = {a["id"]: a for a in sandbox.client.get("/_sandbox/athletes").json()}
    assert athletes[1001]["authorized"] is False


def test_other_athletes_activity_is_not_found(sandbox: Sandbox) -> None:
    token = sandbox.login(1002)["access_token"]
    other = sandbox.state.activity_ids(1001)[0]
    response = sandbox.get(f"/api/v3/activities/{other}", token)
    assert response.status_code == 404
    assert response.json() == NOT_FOUND


# ------------------------------------------------------------------------ rate limits


def test_read_limit_returns_429_and_still_counts_daily(make_sandbox: SandboxFactory) -> None:
    sb = make_sandbox(athletes=1, read_limit_15min=3)
    token = sb.login(1001)["access_token"]
    for expected in ("1,1", "2,2", "3,3"):
        ok = sb.get("/api/v3/athlete", token)
        assert ok.status_code == 200
        assert ok.headers["X-ReadRateLimit-Usage"] == expected
    limited = sb.get("/api/v3/athlete", token)
    assert limited.status_code == 429
    assert limited.json() == RATE_ERROR
    assert limited.headers["X-RateLimit-Limit"] == "200,2000"
    assert limited.headers["X-RateLimit-Usage"] == "4,4"
    assert limited.headers["X-ReadRateLimit-Limit"] == "3,1000"
    assert limited.headers["X-ReadRateLimit-Usage"] == "4,4"
    stats = sb.client.get("/_sandbox/stats").json()
    assert stats["rate_limited"] == 1
    assert stats["usage"] == {
        "overall_15min": 4,
        "overall_daily": 4,
        "read_15min": 4,
        "read_daily": 4,
    }


@pytest.mark.parametrize("time_scale", [1.0, 900.0])
def test_fifteen_minute_window_resets_on_boundary(
    make_sandbox: SandboxFactory, time_scale: float
) -> None:
    sb = make_sandbox(athletes=1, read_limit_15min=2, time_scale=time_scale)
    window = 900.0 / time_scale
    sb.clock.set(math.floor(START / window) * window + 0.25 * window)
    token = sb.login(1001)["access_token"]
    codes = [sb.get("/api/v3/athlete", token).status_code for _ in range(3)]
    assert codes == [200, 200, 429]
    sb.clock.advance(0.7 * window)  # still inside the same window
    assert sb.get("/api/v3/athlete", token).status_code == 429
    sb.clock.advance(0.1 * window)  # crossed the boundary
    after = sb.get("/api/v3/athlete", token)
    assert after.status_code == 200
    assert after.headers["X-ReadRateLimit-Usage"] == "1,5"


def test_daily_limit_blocks_until_next_day(make_sandbox: SandboxFactory) -> None:
    sb = make_sandbox(athletes=1, read_limit_daily=2)
    token = sb.login(1001)["access_token"]
    assert [sb.get("/api/v3/athlete", token).status_code for _ in range(3)] == [200, 200, 429]
    sb.clock.advance(900)
    assert sb.get("/api/v3/athlete", token).status_code == 429
    sb.clock.set((START // 86400 + 1) * 86400)  # midnight UTC
    fresh = sb.login(1001)["access_token"]  # the old token expired meanwhile
    response = sb.get("/api/v3/athlete", fresh)
    assert response.status_code == 200
    assert response.headers["X-ReadRateLimit-Usage"] == "1,1"


def test_writes_count_only_toward_overall_limit(make_sandbox: SandboxFactory) -> None:
    sb = make_sandbox(athletes=1, activity_counts={0: 3}, overall_limit_15min=2)
    token = sb.login(1001, scope="activity:read_all,activity:write")["access_token"]
    activity_id = sb.state.activity_ids(1001)[0]
    put = sb.client.put(
        f"/api/v3/activities/{activity_id}",
        json={"name": "Renamed"},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert put.status_code == 200
    assert put.json()["name"] == "Renamed"
    assert put.headers["X-RateLimit-Usage"] == "1,1"
    assert put.headers["X-ReadRateLimit-Usage"] == "0,0"
    assert sb.get("/api/v3/athlete", token).status_code == 200
    assert sb.get("/api/v3/athlete", token).status_code == 429


def test_rate_limits_can_be_disabled(make_sandbox: SandboxFactory) -> None:
    sb = make_sandbox(athletes=1, read_limit_15min=1, rate_limits_enabled=False)
    token = sb.login(1001)["access_token"]
    responses = [sb.get("/api/v3/athlete", token) for _ in range(3)]
    assert [r.status_code for r in responses] == [200, 200, 200]
    assert responses[-1].headers["X-ReadRateLimit-Usage"] == "3,3"


def test_oauth_endpoints_do_not_count(sandbox: Sandbox) -> None:
    sandbox.login(1001)
    assert sandbox.state.usage()["overall_daily"] == 0


# ----------------------------------------------------------------------------- faults


@pytest.mark.parametrize(("status", "expected"), [(None, 503), (500, 500), (502, 502)])
def test_5xx_fault_consumes_its_count(sandbox: Sandbox, status: int | None, expected: int) -> None:
    token = sandbox.login(1001)["access_token"]
    sandbox.state.inject_fault("5xx", count=2, status=status)
    codes = [sandbox.get("/api/v3/athlete", token).status_code for _ in range(3)]
    assert codes == [expected, expected, 200]
    assert sandbox.state.list_faults() == []


def test_fault_filters_by_path_and_athlete(sandbox: Sandbox) -> None:
    a = sandbox.login(1001)["access_token"]
    b = sandbox.login(1002)["access_token"]
    sandbox.state.inject_fault("5xx", count=1, path_contains="/athlete/activities", athlete_id=1002)
    assert sandbox.get("/api/v3/athlete", b).status_code == 200
    assert sandbox.get("/api/v3/athlete/activities", a).status_code == 200
    assert sandbox.get("/api/v3/athlete/activities", b).status_code == 503
    assert sandbox.get("/api/v3/athlete/activities", b).status_code == 200


def test_429_storm_ignores_budget(sandbox: Sandbox) -> None:
    token = sandbox.login(1001)["access_token"]
    sandbox.state.inject_fault("429", count=2)
    responses = [sandbox.get("/api/v3/athlete", token) for _ in range(3)]
    assert [r.status_code for r in responses] == [429, 429, 200]
    assert responses[0].json() == RATE_ERROR
    assert "X-RateLimit-Usage" in responses[0].headers


def test_revoked_fault_breaks_calls_and_refresh(sandbox: Sandbox) -> None:
    tokens = sandbox.login(1001)
    other = sandbox.login(1002)["access_token"]
    sandbox.state.inject_fault("revoked", athlete_id=1001)
    assert sandbox.get("/api/v3/athlete", tokens["access_token"]).json() == AUTH_ERROR
    assert sandbox.get("/api/v3/athlete", other).status_code == 200
    refresh = sandbox.client.post(
        "/oauth/token",
        data={
            "client_id": CLIENT_ID,
            "client_secret": SECRET,
            "grant_type": "refresh_token",
            "refresh_token": tokens["refresh_token"],
        },
    )
    assert refresh.status_code == 400
    assert refresh.json() == BAD_REFRESH
    assert sandbox.login(1001)["athlete"]["id"] == 1001  # can re-authorize


def test_deleted_fault_makes_activity_404(sandbox: Sandbox) -> None:
    token = sandbox.login(1001)["access_token"]
    victim = sandbox.state.activity_ids(1001)[3]
    assert sandbox.get(f"/api/v3/activities/{victim}", token).status_code == 200
    sandbox.state.inject_fault("deleted", activity_id=victim)
    response = sandbox.get(f"/api/v3/activities/{victim}", token)
    assert response.status_code == 404
    assert response.json() == NOT_FOUND
    assert sandbox.get(f"/api/v3/activities/{victim}/streams", token).status_code == 404
    listed = [
        a["id"] for a in sandbox.get("/api/v3/athlete/activities", token, per_page=200).json()
    ]
    assert victim not in listed and len(listed) == 39


def test_slow_fault_delays_then_answers(sandbox: Sandbox) -> None:
    token = sandbox.login(1001)["access_token"]
    sandbox.state.inject_fault("slow", delay=0.3)
    started = time.monotonic()
    response = sandbox.get("/api/v3/athlete", token)
    assert response.status_code == 200
    assert time.monotonic() - started >= 0.3


def test_timeout_fault_exceeds_client_timeout(sandbox: Sandbox) -> None:
    token = sandbox.login(1001)["access_token"]
    sandbox.state.inject_fault("timeout", delay=5.0)
    with pytest.raises(httpx.ReadTimeout):
        sandbox.client.get(
            "/api/v3/athlete", headers={"Authorization": f"Bearer {token}"}, timeout=0.2
        )
    assert sandbox.get("/api/v3/athlete", token).status_code == 200


def test_slow_response_does_not_block_others(sandbox: Sandbox) -> None:
    token = sandbox.login(1001)["access_token"]
    sandbox.state.inject_fault("slow", path_contains="/athlete/activities", delay=1.0)
    finished: list[str] = []

    async def call(client: httpx.AsyncClient, path: str) -> None:
        response = await client.get(path, headers={"Authorization": f"Bearer {token}"})
        assert response.status_code == 200
        finished.append(path)

    async def main() -> None:
        async with httpx.AsyncClient(base_url=sandbox.server.url, timeout=5.0) as client:
            await asyncio.gather(
                call(client, "/api/v3/athlete/activities"), call(client, "/api/v3/athlete")
            )

    asyncio.run(main())
    assert finished == ["/api/v3/athlete", "/api/v3/athlete/activities"]


def test_fault_on_token_endpoint(sandbox: Sandbox) -> None:
    tokens = sandbox.login(1001)
    sandbox.state.inject_fault("5xx", path_contains="/oauth/token")
    form = {
        "client_id": CLIENT_ID,
        "client_secret": SECRET,
        "grant_type": "refresh_token",
        "refresh_token": tokens["refresh_token"],
    }
    assert sandbox.client.post("/oauth/token", data=form).status_code == 503
    assert sandbox.client.post("/oauth/token", data=form).status_code == 200


# --------------------------------------------------------------------- data & streams


@pytest.mark.parametrize("key_by_type", [True, False])
def test_streams_shape(sandbox: Sandbox, key_by_type: bool) -> None:
    token = sandbox.login(1001)["access_token"]
    summaries = sandbox.get("/api/v3/athlete/activities", token, per_page=200).json()
    gps = next(a for a in summaries if a["start_latlng"] and a["has_heartrate"])
    response = sandbox.get(
        f"/api/v3/activities/{gps['id']}/streams",
        token,
        keys="latlng,time,heartrate,altitude",
        key_by_type=str(key_by_type).lower(),
    )
    assert response.status_code == 200
    body = response.json()
    if key_by_type:
        assert isinstance(body, dict)
        streams = body
    else:
        assert isinstance(body, list)
        streams = {s.pop("type"): s for s in body}
    assert set(streams) == {"latlng", "time", "heartrate", "altitude", "distance"}
    sizes = {len(s["data"]) for s in streams.values()}
    assert len(sizes) == 1 and 100 <= sizes.pop() <= 5000
    for stream in streams.values():
        assert stream["series_type"] == "distance"
        assert stream["resolution"] == "high"
        assert stream["original_size"] == len(stream["data"])
    times = streams["time"]["data"]
    assert times[0] == 0 and times[-1] == gps["elapsed_time"]
    assert all(b > a for a, b in itertools.pairwise(times))
    dist = streams["distance"]["data"]
    assert all(b >= a for a, b in itertools.pairwise(dist))
    assert dist[-1] == pytest.approx(gps["distance"], abs=0.2)
    latlng = streams["latlng"]["data"]
    assert latlng[0] == gps["start_latlng"] and latlng[-1] == gps["end_latlng"]
    assert all(len(p) == 2 and abs(p[0] - latlng[0][0]) < 1.0 for p in latlng)


def test_streams_are_deterministic(sandbox: Sandbox) -> None:
    token = sandbox.login(1001)["access_token"]
    activity_id = sandbox.state.activity_ids(1001)[0]
    first = sandbox.get(
        f"/api/v3/activities/{activity_id}/streams", token, keys="latlng", key_by_type="true"
    ).json()
    second = sandbox.get(
        f"/api/v3/activities/{activity_id}/streams", token, keys="latlng", key_by_type="true"
    ).json()
    assert first == second


SUMMARY_FIELDS = {
    "id",
    "resource_state",
    "external_id",
    "upload_id",
    "athlete",
    "name",
    "distance",
    "moving_time",
    "elapsed_time",
    "total_elevation_gain",
    "elev_high",
    "elev_low",
    "type",
    "sport_type",
    "workout_type",
    "start_date",
    "start_date_local",
    "timezone",
    "utc_offset",
    "start_latlng",
    "end_latlng",
    "location_city",
    "location_state",
    "location_country",
    "achievement_count",
    "kudos_count",
    "comment_count",
    "athlete_count",
    "photo_count",
    "total_photo_count",
    "map",
    "trainer",
    "commute",
    "manual",
    "private",
    "visibility",
    "flagged",
    "gear_id",
    "has_kudoed",
    "average_speed",
    "max_speed",
    "has_heartrate",
    "device_watts",
    "pr_count",
    "suffer_score",
}
DETAIL_FIELDS = SUMMARY_FIELDS | {
    "description",
    "calories",
    "segment_efforts",
    "splits_metric",
    "splits_standard",
    "laps",
    "gear",
    "photos",
    "device_name",
    "embed_token",
    "average_heartrate",
    "max_heartrate",
}


def test_summary_and_detailed_activity_fields(sandbox: Sandbox) -> None:
    token = sandbox.login(1001)["access_token"]
    summaries = sandbox.get("/api/v3/athlete/activities", token, per_page=200).json()
    for summary in summaries:
        assert summary["resource_state"] == 2
        assert set(summary) >= SUMMARY_FIELDS
        assert summary["athlete"] == {"id": 1001, "resource_state": 1}
        assert summary["start_date"].endswith("Z")
    chosen = next(a for a in summaries if a["has_heartrate"] and a["start_latlng"])
    detail = sandbox.get(f"/api/v3/activities/{chosen['id']}", token).json()
    assert detail["resource_state"] == 3
    assert set(detail) >= DETAIL_FIELDS
    assert detail["map"]["polyline"] and detail["map"]["summary_polyline"]
    assert detail["segment_efforts"] == []
    assert len(detail["splits_metric"]) == math.ceil(detail["distance"] / 1000)
    assert sum(s["distance"] for s in detail["splits_metric"]) == pytest.approx(
        detail["distance"], abs=1.0
    )
    assert {k: detail[k] for k in SUMMARY_FIELDS if k not in ("resource_state", "map")} == {
        k: chosen[k] for k in SUMMARY_FIELDS if k not in ("resource_state", "map")
    }


def test_data_is_deterministic_per_seed(make_sandbox: SandboxFactory) -> None:
    def listing(seed: int) -> list[dict[str, Any]]:
        sb = make_sandbox(athletes=1, seed=seed, activity_counts={0: 25})
        token = sb.login(1001)["access_token"]
        result: list[dict[str, Any]] = sb.get(
            "/api/v3/athlete/activities", token, per_page=200
        ).json()
        return result

    first, again, other = listing(7), listing(7), listing(8)
    assert first == again
    assert first != other
    starts = [a["start_date"] for a in first]
    assert len(set(starts)) == 25
    assert all(calendar.timegm(time.strptime(s, "%Y-%m-%dT%H:%M:%SZ")) <= START for s in starts)


def test_default_activity_counts_are_seeded() -> None:
    counts = [
        a["activity_count"]
        for a in StravaSandboxState(
            StravaSandboxConfig(athletes=4, anchor_epoch=START)
        ).list_athletes()
    ]
    again = [
        a["activity_count"]
        for a in StravaSandboxState(
            StravaSandboxConfig(athletes=4, anchor_epoch=START)
        ).list_athletes()
    ]
    assert counts == again
    assert all(0 <= c <= 300 for c in counts)


# --------------------------------------------------------------------- control API


def test_control_athletes_and_activities(sandbox: Sandbox) -> None:
    c = sandbox.client
    listed = c.get("/_sandbox/athletes").json()
    assert [(a["id"], a["activity_count"], a["authorized"]) for a in listed] == [
        (1001, 40, False),
        (1002, 5, False),
        (1003, 0, False),
    ]
    new_id = c.post("/_sandbox/athletes", json={"activity_count": 7}).json()["id"]
    assert new_id == 1004
    token = sandbox.login(new_id)["access_token"]
    before = sandbox.get("/api/v3/athlete/activities", token).json()
    assert len(before) == 7
    added = c.post(f"/_sandbox/athletes/{new_id}/activities", json={"count": 3}).json()["ids"]
    after = sandbox.get("/api/v3/athlete/activities", token).json()
    assert [a["id"] for a in after[:3]] == added[::-1]
    newest = sandbox.state.activity_start(added[-1])
    assert newest == int(sandbox.clock()) and newest > sandbox.state.activity_start(added[0])
    assert sandbox.state.activity_start(added[0]) > sandbox.state.activity_start(before[0]["id"])
    patched = c.patch(f"/_sandbox/activities/{added[0]}", json={"name": "Edited", "private": True})
    assert patched.status_code == 200
    detail = sandbox.get(f"/api/v3/activities/{added[0]}", token).json()
    assert detail["name"] == "Edited" and detail["private"] is True
    assert detail["visibility"] == "only_me"
    assert c.delete(f"/_sandbox/activities/{added[1]}").status_code == 200
    assert c.delete(f"/_sandbox/activities/{added[1]}").status_code == 404
    assert sandbox.get(f"/api/v3/activities/{added[1]}", token).status_code == 404
    athletes = {a["id"]: a for a in c.get("/_sandbox/athletes").json()}
    assert athletes[new_id] == {**athletes[new_id], "activity_count": 9, "authorized": True}
    assert c.post(f"/_sandbox/athletes/{new_id}/revoke").json() == {"revoked": 1}
    assert sandbox.get("/api/v3/athlete", token).status_code == 401


def test_control_faults_and_stats(sandbox: Sandbox) -> None:
    c = sandbox.client
    token = sandbox.login(1001)["access_token"]
    fault = c.post("/_sandbox/faults", json={"kind": "5xx", "count": 3, "status": 502})
    assert fault.status_code == 200
    assert sandbox.get("/api/v3/athlete", token).status_code == 502
    assert c.get("/_sandbox/faults").json()[0]["remaining"] == 2
    assert c.delete("/_sandbox/faults").json() == {"cleared": 1}
    assert sandbox.get("/api/v3/athlete", token).status_code == 200
    assert c.post("/_sandbox/faults", json={"kind": "bogus"}).status_code == 400
    stats = c.get("/_sandbox/stats").json()
    assert stats["requests_total"] == 4
    assert stats["requests_by_endpoint"] == {
        "GET /oauth/authorize": 1,
        "POST /oauth/token": 1,
        "GET /api/v3/athlete": 2,
    }
    assert stats["responses_by_status"] == {"302": 1, "200": 2, "502": 1}
    assert stats["usage"]["read_15min"] == 2
    assert c.post("/_sandbox/reset-stats").status_code == 200
    reset = c.get("/_sandbox/stats").json()
    assert reset["requests_total"] == 0 and reset["requests_by_endpoint"] == {}
    assert reset["usage"]["read_15min"] == 2


def test_control_tokens_and_clock(sandbox: Sandbox) -> None:
    c = sandbox.client
    tokens = c.post("/_sandbox/athletes/1002/tokens", json={"scope": "activity:read"}).json()
    assert tokens["athlete"]["id"] == 1002
    assert sandbox.get("/api/v3/athlete", tokens["access_token"]).status_code == 200
    assert c.post("/_sandbox/clock", json={"advance": 21600}).json()["now"] == START + 21600
    assert sandbox.get("/api/v3/athlete", tokens["access_token"]).status_code == 401


def test_unknown_api_path_is_404_with_headers(sandbox: Sandbox) -> None:
    token = sandbox.login(1001)["access_token"]
    response = sandbox.get("/api/v3/segments/123", token)
    assert response.status_code == 404
    assert response.headers["X-RateLimit-Usage"] == "1,1"


# ------------------------------------------------------------------- numeric types
# JSON number types of Strava's published models (swagger ``SummaryActivity``,
# ``DetailedActivity``, ``Lap``, ``Split``, ``SummaryGear``, ``DetailedAthlete``, the
# ``*Stream`` data types) and of the undocumented fields as typed clients read them
# (stravalib 2.5 ``model.py``: ``max_heartrate``, ``suffer_score``, ``average_temp`` are
# ints, ``average_heartrate``, ``average_cadence``, ``utc_offset`` floats). A whole number
# sent as 157.4 breaks clients that validate ints; ``None`` marks a nullable field.
ACTIVITY_NUMBERS: dict[str, tuple[type, ...]] = {
    "id": (int,),
    "resource_state": (int,),
    "distance": (float,),
    "moving_time": (int,),
    "elapsed_time": (int,),
    "total_elevation_gain": (float,),
    "workout_type": (int, type(None)),
    "utc_offset": (float,),
    "achievement_count": (int,),
    "kudos_count": (int,),
    "comment_count": (int,),
    "athlete_count": (int,),
    "photo_count": (int,),
    "total_photo_count": (int,),
    "pr_count": (int,),
    "average_speed": (float,),
    "max_speed": (float,),
    "elev_high": (float,),
    "elev_low": (float,),
    "upload_id": (int, type(None)),
    "suffer_score": (int, type(None)),
    "average_cadence": (float,),
    "average_temp": (int,),
    "average_watts": (float,),
    "kilojoules": (float,),
    "weighted_average_watts": (int,),
    "max_watts": (int,),
    "average_heartrate": (float,),
    "max_heartrate": (int,),
}
NUMBER_TYPES: dict[str, dict[str, tuple[type, ...]]] = {
    "summary": ACTIVITY_NUMBERS,
    "detail": {**ACTIVITY_NUMBERS, "calories": (float,)},
    "lap": {
        "id": (int,),
        "resource_state": (int,),
        "elapsed_time": (int,),
        "moving_time": (int,),
        "distance": (float,),
        "start_index": (int,),
        "end_index": (int,),
        "total_elevation_gain": (float,),
        "average_speed": (float,),
        "max_speed": (float,),
        "lap_index": (int,),
        "split": (int,),
        "pace_zone": (int,),
        "average_cadence": (float,),
        "average_watts": (float,),
        "average_heartrate": (float,),
        "max_heartrate": (float,),
    },
    "split": {
        "distance": (float,),
        "elapsed_time": (int,),
        "elevation_difference": (float,),
        "moving_time": (int,),
        "split": (int,),
        "average_speed": (float,),
        "average_grade_adjusted_speed": (float,),
        "pace_zone": (int,),
        "average_heartrate": (float,),
    },
    "gear": {"resource_state": (int,), "distance": (float,), "converted_distance": (float,)},
    "athlete": {
        "id": (int,),
        "resource_state": (int,),
        "badge_type_id": (int,),
        "weight": (float,),
        "follower_count": (int,),
        "friend_count": (int,),
        "mutual_friend_count": (int,),
        "ftp": (int, type(None)),
    },
    "athlete_gear": {"resource_state": (int,), "distance": (float,)},
    "stream": {"original_size": (int,)},
}
#: Element type of each stream's ``data`` (``latlng`` holds pairs of floats).
STREAM_TYPES: dict[str, type] = {
    "time": int,
    "distance": float,
    "velocity_smooth": float,
    "altitude": float,
    "grade_smooth": float,
    "heartrate": int,
    "cadence": int,
    "watts": int,
    "temp": int,
    "moving": bool,
    "latlng": float,
}


@pytest.fixture(scope="module")
def payloads() -> Iterator[dict[str, list[dict[str, Any]]]]:
    """Every object kind the sandbox serves, fetched over HTTP from a varied athlete."""
    clock = ManualClock(START)
    counts = {0: 120, 1: 0, 2: 0, 3: 0, 4: 0}
    config = StravaSandboxConfig(athletes=5, activity_counts=counts, anchor_epoch=START)
    state = StravaSandboxState(config, now=clock)
    with SlotServer() as running:
        client = running.plug(create_app(state))
        sb = Sandbox(state, running.server, client, clock)
        token = sb.login(1001, scope="read,profile:read_all,activity:read_all")["access_token"]
        summaries = sb.get("/api/v3/athlete/activities", token, per_page=200).json()
        by_sport: dict[tuple[str, bool, bool], dict[str, Any]] = {}
        for summary in summaries:  # one detail per kind of activity
            key = (summary["sport_type"], summary["has_heartrate"], "average_temp" in summary)
            by_sport.setdefault(key, summary)
        details = [sb.get(f"/api/v3/activities/{a['id']}", token).json() for a in by_sport.values()]
        streams: list[dict[str, Any]] = []
        for detail in details:
            got = sb.get(f"/api/v3/activities/{detail['id']}/streams", token, key_by_type="true")
            streams.extend({"type": k, **v} for k, v in got.json().items())
        athletes = [sb.get("/api/v3/athlete", token).json()]
        for other in state.athlete_ids()[1:]:
            grant = client.post(
                f"/_sandbox/athletes/{other}/tokens", json={"scope": "profile:read_all"}
            )
            athletes.append(sb.get("/api/v3/athlete", grant.json()["access_token"]).json())
    yield {
        "summary": summaries,
        "detail": details,
        "lap": [lap for d in details for lap in d["laps"]],
        "split": [s for d in details for s in d["splits_metric"] + d["splits_standard"]],
        "gear": [d["gear"] for d in details if d["gear"]],
        "athlete": athletes,
        "athlete_gear": [g for a in athletes for g in a["bikes"] + a["shoes"]],
        "stream": streams,
    }


@pytest.mark.parametrize(
    ("kind", "field", "allowed"),
    [(kind, f, t) for kind, fields in NUMBER_TYPES.items() for f, t in fields.items()],
    ids=[f"{kind}.{f}" for kind, fields in NUMBER_TYPES.items() for f in fields],
)
def test_numeric_fields_have_stravas_types(
    payloads: dict[str, list[dict[str, Any]]], kind: str, field: str, allowed: tuple[type, ...]
) -> None:
    values = [obj[field] for obj in payloads[kind] if field in obj]
    assert any(v is not None for v in values), f"no {kind} carries {field}"
    wrong = sorted({repr(v) for v in values if type(v) not in allowed})
    assert not wrong, f"{kind}.{field} must be {allowed}, got {wrong[:5]}"


@pytest.mark.parametrize(("key", "element"), sorted(STREAM_TYPES.items()))
def test_stream_data_has_stravas_types(
    payloads: dict[str, list[dict[str, Any]]], key: str, element: type
) -> None:
    data = [s["data"] for s in payloads["stream"] if s["type"] == key]
    assert data, f"no {key} stream served"
    flat = [x for series in data for x in series]
    if key == "latlng":
        assert all(len(pair) == 2 for pair in flat)
        flat = [x for pair in flat for x in pair]
    wrong = sorted({repr(x) for x in flat if type(x) is not element})
    assert not wrong, f"{key} data must be {element.__name__}, got {wrong[:5]}"
