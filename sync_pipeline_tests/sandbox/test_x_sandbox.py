"""Tests of the X (Twitter) API v2 sandbox over real HTTP on loopback."""

from __future__ import annotations

import base64
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs, urlsplit
from zoneinfo import ZoneInfo

import httpx
import pytest

from sync_pipeline.sandbox.server import SandboxServer
from sync_pipeline.sandbox.x import (
    ManualClock,
    XSandboxConfig,
    XSandboxState,
    create_app,
    pkce_s256,
)
from sync_pipeline_tests.serving import SlotServer

START = 1_750_000_000.0  # 2025-06-15T15:06:40Z, 400 s into a 15-minute window
WINDOW_END = 1_750_000_500
CLIENT_ID = "x-sandbox-client-id"
SECRET = "x-sandbox-client-secret"
REDIRECT = "http://localhost:8765/x/callback"
VERIFIER = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk-long-enough-verifier"
UNAUTHORIZED = {
    "title": "Unauthorized",
    "type": "about:blank",
    "status": 401,
    "detail": "Unauthorized",
}
TOO_MANY = {
    "title": "Too Many Requests",
    "detail": "Too Many Requests",
    "type": "about:blank",
    "status": 429,
}
INVALID_REQUEST_TYPE = "https://api.twitter.com/2/problems/invalid-request"


def basic(client_id: str = CLIENT_ID, secret: str = SECRET) -> dict[str, str]:
    """HTTP Basic header of a confidential client."""
    raw = base64.b64encode(f"{client_id}:{secret}".encode()).decode()
    return {"Authorization": f"Basic {raw}"}


@dataclass
class Sandbox:
    """A running X sandbox plus an HTTP client pointed at it."""

    state: XSandboxState
    server: SandboxServer
    client: httpx.Client
    clock: ManualClock

    def authorize(self, **overrides: str) -> httpx.Response:
        """GET the authorize endpoint with sensible defaults."""
        params = {
            "response_type": "code",
            "client_id": CLIENT_ID,
            "redirect_uri": REDIRECT,
            "scope": "tweet.read users.read offline.access",
            "state": "st-1",
            "code_challenge": pkce_s256(VERIFIER),
            "code_challenge_method": "S256",
            **overrides,
        }
        return self.client.get("/i/oauth2/authorize", params=params)

    def code(self, **overrides: str) -> str:
        """An authorization code from an approved authorize request."""
        response = self.authorize(**overrides)
        assert response.status_code == 302, response.text
        return parse_qs(urlsplit(response.headers["location"]).query)["code"][0]

    def token(self, form: dict[str, str], headers: dict[str, str] | None = None) -> httpx.Response:
        """POST the token endpoint (form-encoded, Basic auth by default)."""
        return self.client.post(
            "/2/oauth2/token", data=form, headers=basic() if headers is None else headers
        )

    def login(self, user: str | None = None, scope: str | None = None) -> dict[str, Any]:
        """The whole code flow; returns the token response."""
        overrides = {"sandbox_user": user} if user else {}
        if scope is not None:
            overrides["scope"] = scope
        code = self.code(**overrides)
        response = self.token(
            {
                "grant_type": "authorization_code",
                "code": code,
                "redirect_uri": REDIRECT,
                "code_verifier": VERIFIER,
            }
        )
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    def get(self, path: str, token: str, **params: Any) -> httpx.Response:
        """GET an API path with a bearer token."""
        return self.client.get(path, params=params, headers={"Authorization": f"Bearer {token}"})

    def timeline(self, user_id: str, token: str, **params: Any) -> list[dict[str, Any]]:
        """Every page of a user's timeline, following ``next_token`` to the end."""
        out: list[dict[str, Any]] = []
        while True:
            response = self.get(f"/2/users/{user_id}/tweets", token, **params)
            assert response.status_code == 200, response.text
            body = response.json()
            out.extend(body.get("data", []))
            token_next = body["meta"].get("next_token")
            if token_next is None:
                return out
            params = {**params, "pagination_token": token_next}


SandboxFactory = Callable[..., Sandbox]


@pytest.fixture
def make_sandbox(served: SlotServer) -> Iterator[SandboxFactory]:
    """Factory of X sandboxes (fresh state + app on the module's server + client)."""

    def factory(**config: Any) -> Sandbox:
        clock = ManualClock(START)
        config.setdefault("anchor_epoch", START)
        state = XSandboxState(XSandboxConfig(**config), now=clock)
        return Sandbox(state, served.server, served.plug(create_app(state)), clock)

    yield factory
    served.unplug()


@pytest.fixture
def sandbox(make_sandbox: SandboxFactory) -> Sandbox:
    """A default sandbox with three accounts and natural histories."""
    return make_sandbox()


# ------------------------------------------------------------------------------ data


def test_histories_are_deterministic_and_realistic() -> None:
    a = XSandboxState(XSandboxConfig(anchor_epoch=START), now=ManualClock(START))
    b = XSandboxState(XSandboxConfig(anchor_epoch=START), now=ManualClock(START))
    assert a.list_accounts() == b.list_accounts()
    zones = set()
    local_vs_utc_differs = False
    for account_id in a.account_ids():
        times = a.item_times(account_id)
        assert times == b.item_times(account_id)
        assert all(START - 121 * 86400 < t < START for t in times)
        account = a.account(account_id)
        zones.add(account.tz)
        local = a.daily_counts(account_id)
        assert sum(local.values()) == len(times)
        assert len(local) < 120  # some days without posts
        local_vs_utc_differs |= local != a.daily_counts(account_id, "UTC")
    assert len(zones) == 3
    assert local_vs_utc_differs


def test_daily_counts_match_created_at_in_local_days(sandbox: Sandbox) -> None:
    user_id = sandbox.state.account_ids()[1]
    token = sandbox.login(user_id)["access_token"]
    tweets = sandbox.timeline(user_id, token, max_results=100, **{"tweet.fields": "created_at"})
    zone = ZoneInfo(sandbox.state.account(user_id).tz)
    by_day = Counter(
        datetime.fromisoformat(t["created_at"]).astimezone(zone).date().isoformat() for t in tweets
    )
    assert dict(sorted(by_day.items())) == sandbox.state.daily_counts(user_id)


# ----------------------------------------------------------------------------- OAuth


@pytest.mark.parametrize("method", ["S256", "plain"])
def test_oauth_code_flow_with_pkce(sandbox: Sandbox, method: str) -> None:
    challenge = pkce_s256(VERIFIER) if method == "S256" else VERIFIER
    redirect = sandbox.authorize(code_challenge=challenge, code_challenge_method=method)
    assert redirect.status_code == 302
    location = urlsplit(redirect.headers["location"])
    assert f"{location.scheme}://{location.netloc}{location.path}" == REDIRECT
    query = parse_qs(location.query)
    assert query["state"] == ["st-1"]
    response = sandbox.token(
        {
            "grant_type": "authorization_code",
            "code": query["code"][0],
            "redirect_uri": REDIRECT,
            "code_verifier": VERIFIER,
        }
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"token_type", "expires_in", "access_token", "scope", "refresh_token"}
    assert body["token_type"] == "bearer" and body["expires_in"] == 7200
    assert body["scope"].split() == sorted(["tweet.read", "users.read", "offline.access"])
    me = sandbox.get("/2/users/me", body["access_token"])
    assert me.status_code == 200
    first = sandbox.state.account_ids()[0]
    assert me.json() == {
        "data": {
            "id": first,
            "name": sandbox.state.account(first).name,
            "username": sandbox.state.account(first).username,
        }
    }
    second = sandbox.login()["access_token"]  # next authorization picks the next account
    assert sandbox.get("/2/users/me", second).json()["data"]["id"] == sandbox.state.account_ids()[1]


def test_sandbox_user_accepts_username(sandbox: Sandbox) -> None:
    account = sandbox.state.account(sandbox.state.account_ids()[2])
    token = sandbox.login(account.username)["access_token"]
    assert sandbox.get("/2/users/me", token).json()["data"]["id"] == account.id


def test_no_refresh_token_without_offline_access(sandbox: Sandbox) -> None:
    body = sandbox.login(scope="tweet.read users.read")
    assert "refresh_token" not in body
    assert body["scope"] == "tweet.read users.read"


def _code_form(code: str, **overrides: str) -> dict[str, str]:
    return {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": REDIRECT,
        "code_verifier": VERIFIER,
        **overrides,
    }


@pytest.mark.parametrize(
    ("case", "status", "error", "description"),
    [
        ("wrong_secret", 401, "unauthorized_client", "Missing valid authorization header"),
        ("no_basic_auth", 401, "unauthorized_client", "Missing valid authorization header"),
        ("reused_code", 400, "invalid_request", "authorization code was invalid"),
        ("wrong_redirect_uri", 400, "invalid_request", "authorization code was invalid"),
        ("wrong_verifier", 400, "invalid_request", "authorization code was invalid"),
        ("expired_code", 400, "invalid_request", "authorization code was invalid"),
        ("missing_verifier", 400, "invalid_request", "Missing required parameter [code_verifier]"),
        ("bad_grant_type", 400, "unsupported_grant_type", "grant type was invalid"),
    ],
)
def test_code_exchange_errors(
    sandbox: Sandbox, case: str, status: int, error: str, description: str
) -> None:
    code = sandbox.code()
    form = _code_form(code)
    headers = basic()
    if case == "wrong_secret":
        headers = basic(secret="nope")
    elif case == "no_basic_auth":
        headers = {}
        form["client_id"] = CLIENT_ID
    elif case == "reused_code":
        assert sandbox.token(form).status_code == 200
    elif case == "wrong_redirect_uri":
        form["redirect_uri"] = REDIRECT + "/other"
    elif case == "wrong_verifier":
        form["code_verifier"] = VERIFIER + "x"
    elif case == "expired_code":
        sandbox.clock.advance(31)
    elif case == "missing_verifier":
        del form["code_verifier"]
    elif case == "bad_grant_type":
        form["grant_type"] = "password"
    response = sandbox.token(form, headers)
    assert response.status_code == status
    assert set(response.json()) == {"error", "error_description"}
    assert response.json()["error"] == error
    assert description in response.json()["error_description"]


def test_public_client_sends_client_id_instead_of_basic(make_sandbox: SandboxFactory) -> None:
    sb = make_sandbox(confidential_client=False)
    response = sb.token(_code_form(sb.code(), client_id=CLIENT_ID), headers={})
    assert response.status_code == 200


def test_refresh_rotates_refresh_token(sandbox: Sandbox) -> None:
    first = sandbox.login()
    sandbox.clock.advance(600)
    form = {"grant_type": "refresh_token", "refresh_token": first["refresh_token"]}
    second = sandbox.token(form)
    assert second.status_code == 200
    body = second.json()
    assert body["refresh_token"] != first["refresh_token"]
    assert body["access_token"] != first["access_token"]
    assert body["expires_in"] == 7200
    reuse = sandbox.token(form)
    assert reuse.status_code == 400
    assert reuse.json() == {
        "error": "invalid_request",
        "error_description": "Value passed for the token was invalid.",
    }
    third = sandbox.token({"grant_type": "refresh_token", "refresh_token": body["refresh_token"]})
    assert third.status_code == 200
    assert sandbox.get("/2/users/me", third.json()["access_token"]).status_code == 200
    assert sandbox.client.get("/_sandbox/stats").json()["refreshes"] == 2


def test_refresh_requires_client_auth(sandbox: Sandbox) -> None:
    refresh = sandbox.login()["refresh_token"]
    response = sandbox.token({"grant_type": "refresh_token", "refresh_token": refresh}, {})
    assert response.status_code == 401
    assert response.json()["error"] == "unauthorized_client"


@pytest.mark.parametrize("how", ["two_hours_pass", "control_expire", "revoked", "garbage"])
def test_invalid_tokens_get_401(sandbox: Sandbox, how: str) -> None:
    tokens = sandbox.login()
    user_id = sandbox.state.account_ids()[0]
    token = tokens["access_token"]
    assert sandbox.get("/2/users/me", token).status_code == 200
    if how == "two_hours_pass":
        sandbox.clock.advance(7200)
    elif how == "control_expire":
        assert sandbox.client.post(f"/_sandbox/accounts/{user_id}/expire").json()["expired"] == 1
    elif how == "revoked":
        assert sandbox.client.post(f"/_sandbox/accounts/{user_id}/revoke").json()["revoked"] == 2
    else:
        token = "not-a-token"
    response = sandbox.get(f"/2/users/{user_id}/tweets", token)
    assert response.status_code == 401
    assert response.json() == UNAUTHORIZED
    refreshed = sandbox.token(
        {"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]}
    )
    assert refreshed.status_code == (400 if how == "revoked" else 200)


def test_token_lifetime_is_scaled(make_sandbox: SandboxFactory) -> None:
    sb = make_sandbox(time_scale=3600.0)
    body = sb.login()
    assert body["expires_in"] == 2
    sb.clock.advance(2)
    assert sb.get("/2/users/me", body["access_token"]).status_code == 401


@pytest.mark.parametrize(
    ("overrides", "error"),
    [
        ({"sandbox_deny": "1"}, "access_denied"),
        ({"code_challenge": ""}, "invalid_request"),
        ({"state": ""}, "invalid_request"),
        ({"code_challenge_method": "S512"}, "invalid_request"),
        ({"scope": "tweet.read everything"}, "invalid_scope"),
        ({"response_type": "token"}, "unsupported_response_type"),
    ],
)
def test_authorize_redirects_errors(
    sandbox: Sandbox, overrides: dict[str, str], error: str
) -> None:
    response = sandbox.authorize(**overrides)
    assert response.status_code == 302
    query = parse_qs(urlsplit(response.headers["location"]).query)
    assert query["error"] == [error]
    assert "code" not in query


@pytest.mark.parametrize(
    "overrides",
    [{"client_id": "other"}, {"redirect_uri": ""}, {"sandbox_user": "nobody_here"}],
)
def test_authorize_rejects_without_redirect(sandbox: Sandbox, overrides: dict[str, str]) -> None:
    response = sandbox.authorize(**overrides)
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_request"


def test_unregistered_redirect_uri_is_rejected(make_sandbox: SandboxFactory) -> None:
    sb = make_sandbox(redirect_uris=(REDIRECT,))
    assert sb.authorize().status_code == 302
    assert sb.authorize(redirect_uri="http://evil.example/cb").status_code == 400


def test_missing_scope_is_forbidden(sandbox: Sandbox) -> None:
    token = sandbox.login(scope="users.read")["access_token"]
    response = sandbox.get("/2/users/me", token)
    assert response.status_code == 403
    assert response.json() == {
        "title": "Forbidden",
        "detail": "Forbidden",
        "type": "about:blank",
        "status": 403,
    }


# ------------------------------------------------------------------------ timelines


@pytest.mark.parametrize(
    ("count", "max_results", "pages"),
    [(0, 10, 1), (5, 5, 1), (7, 5, 2), (101, 100, 2), (250, 100, 3), (3300, 100, 32)],
)
def test_timeline_pages_to_completion(
    make_sandbox: SandboxFactory, count: int, max_results: int, pages: int
) -> None:
    sb = make_sandbox(accounts=1, tweet_counts={0: count})
    user_id = sb.state.account_ids()[0]
    token = sb.login()["access_token"]
    seen_pages = 0
    ids: list[int] = []
    params: dict[str, Any] = {"max_results": max_results}
    while True:
        response = sb.get(f"/2/users/{user_id}/tweets", token, **params)
        assert response.status_code == 200
        body = response.json()
        seen_pages += 1
        if count == 0:
            assert body == {"meta": {"result_count": 0}}
            break
        page = [int(t["id"]) for t in body["data"]]
        assert body["meta"]["result_count"] == len(page) <= max_results
        assert body["meta"]["newest_id"] == str(page[0])
        assert body["meta"]["oldest_id"] == str(page[-1])
        ids.extend(page)
        if "next_token" not in body["meta"]:
            break
        params["pagination_token"] = body["meta"]["next_token"]
    reachable = min(count, 3200)
    assert seen_pages == pages
    assert len(ids) == len(set(ids)) == reachable
    assert ids == sorted(ids, reverse=True)  # newest first
    assert sum(sb.state.daily_counts(user_id).values()) == reachable
    assert sum(sb.state.daily_counts(user_id, reachable_only=False).values()) == count


def test_default_page_size_is_ten(sandbox: Sandbox) -> None:
    user_id = sandbox.state.account_ids()[1]
    token = sandbox.login(user_id)["access_token"]
    body = sandbox.get(f"/2/users/{user_id}/tweets", token).json()
    assert body["meta"]["result_count"] == 10
    assert set(body["data"][0]) == {"id", "text", "edit_history_tweet_ids"}


def test_fields_and_expansions(sandbox: Sandbox) -> None:
    user_id = sandbox.state.account_ids()[1]
    token = sandbox.login(user_id)["access_token"]
    body = sandbox.get(
        f"/2/users/{user_id}/tweets",
        token,
        max_results=5,
        expansions="author_id",
        **{"tweet.fields": "created_at,public_metrics", "user.fields": "created_at"},
    ).json()
    tweet = body["data"][0]
    assert tweet["created_at"].endswith("Z") and len(tweet["created_at"]) == 24
    assert set(tweet["public_metrics"]) == {
        "retweet_count",
        "reply_count",
        "like_count",
        "quote_count",
        "bookmark_count",
        "impression_count",
    }
    assert tweet["author_id"] == user_id
    assert body["includes"]["users"][0]["id"] == user_id
    created_ms = (int(tweet["id"]) >> 22) + 1_288_834_974_657  # snowflake ids encode time
    parsed = datetime.fromisoformat(tweet["created_at"]).timestamp()
    assert abs(created_ms / 1000 - parsed) < 0.001


def test_start_and_end_time_filter_exactly(sandbox: Sandbox) -> None:
    user_id = sandbox.state.account_ids()[2]
    token = sandbox.login(user_id)["access_token"]
    start, end = START - 30 * 86400, START - 10 * 86400
    iso = {
        "start_time": datetime.fromtimestamp(start, UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "end_time": datetime.fromtimestamp(end, UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    got = sandbox.timeline(user_id, token, max_results=100, **iso)
    expected = [t for t in sandbox.state.item_times(user_id) if start <= int(t) < end]
    assert len(got) == len(expected) > 0


def test_since_id_and_previous_token(sandbox: Sandbox) -> None:
    user_id = sandbox.state.account_ids()[2]
    token = sandbox.login(user_id)["access_token"]
    first = sandbox.get(f"/2/users/{user_id}/tweets", token, max_results=5).json()
    assert "previous_token" not in first["meta"]
    second = sandbox.get(
        f"/2/users/{user_id}/tweets",
        token,
        max_results=5,
        pagination_token=first["meta"]["next_token"],
    ).json()
    back = sandbox.get(
        f"/2/users/{user_id}/tweets",
        token,
        max_results=5,
        pagination_token=second["meta"]["previous_token"],
    ).json()
    assert back["data"] == first["data"]
    newer = sandbox.get(
        f"/2/users/{user_id}/tweets", token, since_id=second["meta"]["newest_id"]
    ).json()
    assert [t["id"] for t in newer["data"]] == [t["id"] for t in first["data"]]


@pytest.mark.parametrize(
    ("params", "parameter", "message"),
    [
        ({"max_results": "4"}, "max_results", "is not between 5 and 100"),
        ({"max_results": "101"}, "max_results", "is not between 5 and 100"),
        ({"max_results": "ten"}, "max_results", "is not a number"),
        ({"start_time": "yesterday"}, "start_time", "RFC 3339"),
        ({"start_time": "2025-06-01T00:00:00"}, "start_time", "UTC offset"),
        ({"pagination_token": "garbage"}, "pagination_token", "is not valid"),
        ({"tweet.fields": "created_at,colour"}, "tweet.fields", "[colour] is not one of"),
        ({"exclude": "likes"}, "exclude", "is not one of"),
        ({"since_id": "abc"}, "since_id", "does not match"),
        ({"colour": "blue"}, "colour", "is not one of"),
        (
            {"start_time": "2025-06-02T00:00:00Z", "end_time": "2025-06-01T00:00:00Z"},
            "start_time",
            "must be before",
        ),
    ],
)
def test_invalid_parameters(
    sandbox: Sandbox, params: dict[str, str], parameter: str, message: str
) -> None:
    user_id = sandbox.state.account_ids()[0]
    token = sandbox.login(user_id)["access_token"]
    response = sandbox.get(f"/2/users/{user_id}/tweets", token, **params)
    assert response.status_code == 400
    body = response.json()
    assert body["title"] == "Invalid Request"
    assert body["type"] == INVALID_REQUEST_TYPE
    assert body["detail"] == "One or more parameters to your request was invalid."
    assert list(body["errors"][0]["parameters"]) == [parameter]
    assert message in body["errors"][0]["message"]
    assert "x-rate-limit-remaining" in response.headers


def test_unknown_user_is_a_200_with_errors(sandbox: Sandbox) -> None:
    token = sandbox.login()["access_token"]
    response = sandbox.get("/2/users/123/tweets", token)
    assert response.status_code == 200
    error = response.json()["errors"][0]
    assert error["title"] == "Not Found Error"
    assert error["type"] == "https://api.twitter.com/2/problems/resource-not-found"
    assert error["resource_id"] == "123"


def test_non_numeric_user_id_is_invalid(sandbox: Sandbox) -> None:
    token = sandbox.login()["access_token"]
    response = sandbox.get("/2/users/someone/tweets", token)
    assert response.status_code == 400
    assert list(response.json()["errors"][0]["parameters"]) == ["id"]


# ---------------------------------------------------------------------- rate limits


def test_user_limit_headers_and_exhaustion(make_sandbox: SandboxFactory) -> None:
    sb = make_sandbox(timeline_user_limit=3, timeline_app_limit=100)
    user_id = sb.state.account_ids()[0]
    token = sb.login()["access_token"]
    path = f"/2/users/{user_id}/tweets"
    remaining = []
    for _ in range(3):
        response = sb.get(path, token)
        assert response.status_code == 200
        assert response.headers["x-rate-limit-limit"] == "3"
        assert response.headers["x-rate-limit-reset"] == str(WINDOW_END)
        remaining.append(int(response.headers["x-rate-limit-remaining"]))
    assert remaining == [2, 1, 0]
    limited = sb.get(path, token)
    assert limited.status_code == 429
    assert limited.json() == TOO_MANY
    assert "retry-after" not in limited.headers
    assert limited.headers["x-rate-limit-remaining"] == "0"
    assert limited.headers["x-rate-limit-reset"] == str(WINDOW_END)
    other = sb.login()["access_token"]  # another user has its own bucket
    assert sb.get(path, other).status_code == 200
    assert sb.get("/2/users/me", token).status_code == 200  # other endpoints are separate
    sb.clock.set(WINDOW_END)
    again = sb.get(path, token)
    assert again.status_code == 200
    assert again.headers["x-rate-limit-remaining"] == "2"
    assert again.headers["x-rate-limit-reset"] == str(WINDOW_END + 900)
    assert sb.client.get("/_sandbox/stats").json()["rate_limited"] == 1


def test_app_limit_is_shared_and_headers_show_tighter_bucket(make_sandbox: SandboxFactory) -> None:
    sb = make_sandbox(timeline_user_limit=5, timeline_app_limit=6)
    user_id = sb.state.account_ids()[0]
    first, second = sb.login()["access_token"], sb.login()["access_token"]
    path = f"/2/users/{user_id}/tweets"
    for _ in range(4):
        response = sb.get(path, first)
    assert response.headers["x-rate-limit-limit"] == "5"  # user: 1 left, app: 2 left
    assert response.headers["x-rate-limit-remaining"] == "1"
    response = sb.get(path, second)
    assert response.headers["x-rate-limit-limit"] == "6"  # app: 1 left, user: 4 left
    assert response.headers["x-rate-limit-remaining"] == "1"
    assert sb.get(path, second).status_code == 200
    refused = sb.get(path, second)
    assert refused.status_code == 429
    assert refused.headers["x-rate-limit-limit"] == "6"


def test_users_me_limit_is_75_per_user(sandbox: Sandbox) -> None:
    token = sandbox.login()["access_token"]
    response = sandbox.get("/2/users/me", token)
    assert response.headers["x-rate-limit-limit"] == "75"
    assert response.headers["x-rate-limit-remaining"] == "74"


def test_limits_disabled_keeps_headers(make_sandbox: SandboxFactory) -> None:
    sb = make_sandbox(timeline_user_limit=2, rate_limits_enabled=False)
    user_id = sb.state.account_ids()[0]
    token = sb.login()["access_token"]
    responses = [sb.get(f"/2/users/{user_id}/tweets", token) for _ in range(4)]
    assert [r.status_code for r in responses] == [200] * 4
    assert [r.headers["x-rate-limit-remaining"] for r in responses] == ["1", "0", "0", "0"]


@pytest.mark.parametrize("scope", ["user", "app"])
def test_exhaust_control(sandbox: Sandbox, scope: str) -> None:
    user_id = sandbox.state.account_ids()[0]
    token = sandbox.login()["access_token"]
    body = {"endpoint": "tweets", "scope": scope, "account": user_id}
    result = sandbox.client.post("/_sandbox/exhaust", json=body).json()
    assert result["reset"] == WINDOW_END
    response = sandbox.get(f"/2/users/{user_id}/tweets", token)
    assert response.status_code == 429
    assert response.headers["x-rate-limit-limit"] == ("900" if scope == "user" else "1500")
    sandbox.client.post("/_sandbox/reset-usage")
    assert sandbox.get(f"/2/users/{user_id}/tweets", token).status_code == 200


# --------------------------------------------------------------------------- faults


@pytest.mark.parametrize(
    ("fault", "status", "title"),
    [
        ({"kind": "5xx"}, 503, "Service Unavailable"),
        ({"kind": "5xx", "status": 502}, 502, "Bad Gateway"),
        ({"kind": "error", "status": 500}, 500, "Internal Server Error"),
        ({"kind": "error", "status": 401}, 401, "Unauthorized"),
        ({"kind": "429"}, 429, "Too Many Requests"),
        ({"kind": "timeout", "delay": 0.05}, 504, "Gateway Timeout"),
    ],
)
def test_faults_render_as_x_problems(
    sandbox: Sandbox, fault: dict[str, Any], status: int, title: str
) -> None:
    user_id = sandbox.state.account_ids()[0]
    token = sandbox.login()["access_token"]
    fault_id = sandbox.client.post(
        "/_sandbox/faults", json={**fault, "path_contains": "/tweets", "count": 2}
    ).json()["id"]
    assert sandbox.client.get("/_sandbox/faults").json()[0]["id"] == fault_id
    for _ in range(2):
        response = sandbox.get(f"/2/users/{user_id}/tweets", token)
        assert response.status_code == status
        assert response.json()["title"] == title
    if status == 429:
        assert response.headers["x-rate-limit-remaining"] == "0"
        assert "retry-after" not in response.headers
    assert sandbox.get(f"/2/users/{user_id}/tweets", token).status_code == 200
    assert sandbox.get("/2/users/me", token).status_code == 200
    assert sandbox.client.get("/_sandbox/stats").json()["faults_fired"] == 2


def test_fault_matches_principal_only(sandbox: Sandbox) -> None:
    first_id, second_id = sandbox.state.account_ids()[:2]
    first, second = sandbox.login()["access_token"], sandbox.login()["access_token"]
    sandbox.client.post("/_sandbox/faults", json={"kind": "5xx", "principal": second_id})
    assert sandbox.get("/2/users/me", first).status_code == 200
    assert sandbox.get(f"/2/users/{first_id}/tweets", second).status_code == 503
    assert sandbox.get("/2/users/me", second).status_code == 200


def test_timeout_fault_makes_clients_time_out(sandbox: Sandbox) -> None:
    token = sandbox.login()["access_token"]
    sandbox.client.post("/_sandbox/faults", json={"kind": "timeout", "delay": 5})
    started = time.monotonic()
    with pytest.raises(httpx.ReadTimeout):
        sandbox.client.get("/2/users/me", headers={"Authorization": f"Bearer {token}"}, timeout=0.3)
    assert time.monotonic() - started < 2
    assert sandbox.get("/2/users/me", token).status_code == 200


def test_slow_fault_delays_then_answers(sandbox: Sandbox) -> None:
    token = sandbox.login()["access_token"]
    sandbox.client.post("/_sandbox/faults", json={"kind": "slow", "delay": 0.2})
    started = time.monotonic()
    assert sandbox.get("/2/users/me", token).status_code == 200
    assert time.monotonic() - started >= 0.2


def test_fault_on_token_endpoint(sandbox: Sandbox) -> None:
    tokens = sandbox.login()
    sandbox.client.post("/_sandbox/faults", json={"kind": "5xx", "path_contains": "/oauth2/token"})
    form = {"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]}
    assert sandbox.token(form).status_code == 503
    assert sandbox.token(form).status_code == 200  # the refresh token survived the failure


# ---------------------------------------------------------------------- control API


def test_control_accounts_items_and_daily_counts(sandbox: Sandbox) -> None:
    accounts = sandbox.client.get("/_sandbox/accounts").json()
    assert [a["id"] for a in accounts] == sandbox.state.account_ids()
    assert {"id", "handle", "time_zone", "tweet_count", "connected"} <= set(accounts[0])
    created = sandbox.client.post(
        "/_sandbox/accounts", json={"count": 12, "time_zone": "Asia/Tokyo"}
    ).json()
    assert created["tweet_count"] == 12 and created["time_zone"] == "Asia/Tokyo"
    user_id = created["id"]
    counts = sandbox.client.get(f"/_sandbox/accounts/{user_id}/daily-counts").json()
    assert counts == sandbox.state.daily_counts(user_id) and sum(counts.values()) == 12
    added = sandbox.client.post(f"/_sandbox/accounts/{user_id}/items", json={"count": 3}).json()
    back_then = START - 5 * 86400
    sandbox.client.post(f"/_sandbox/accounts/{user_id}/items", json={"count": 2, "at": back_then})
    token = sandbox.client.post(f"/_sandbox/accounts/{user_id}/tokens", json={}).json()
    tweets = sandbox.timeline(user_id, token["access_token"], max_results=100)
    assert len(tweets) == 17
    assert [t["id"] for t in tweets[:3]] == list(reversed(added["ids"]))
    today = datetime.fromtimestamp(START, ZoneInfo("Asia/Tokyo")).date().isoformat()
    utc_counts = sandbox.client.get(
        f"/_sandbox/accounts/{user_id}/daily-counts", params={"tz": "UTC"}
    ).json()
    assert sum(utc_counts.values()) == 17
    assert sandbox.state.daily_counts(user_id)[today] >= 3


def test_control_tokens_clock_and_stats(sandbox: Sandbox) -> None:
    user_id = sandbox.state.account_ids()[1]
    body = sandbox.client.post(
        f"/_sandbox/accounts/{user_id}/tokens", json={"scope": "tweet.read users.read"}
    ).json()
    assert body["user_id"] == user_id and "refresh_token" not in body
    assert sandbox.get("/2/users/me", body["access_token"]).status_code == 200
    assert sandbox.get("/2/users/me", "bad").status_code == 401
    usage = sandbox.client.get("/_sandbox/stats").json()["usage"]
    assert usage == {f"user:GET /2/users/me:{user_id}": 1}
    assert sandbox.client.post("/_sandbox/clock", json={"advance": 7200}).json()["now"] == (
        START + 7200
    )
    assert sandbox.get("/2/users/me", body["access_token"]).status_code == 401
    stats = sandbox.client.get("/_sandbox/stats").json()
    assert stats["requests_by_endpoint"]["GET /2/users/me"] == 3
    assert stats["responses_by_status"] == {"200": 1, "401": 2}
    assert stats["usage"] == {}  # a new 15-minute window
    bad = sandbox.client.post("/_sandbox/accounts/nobody/tokens", json={})
    assert bad.status_code == 400
