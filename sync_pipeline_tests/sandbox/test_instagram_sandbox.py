"""Tests of the Instagram (Instagram API with Instagram Login) sandbox over real HTTP."""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import parse_qs, urlsplit
from zoneinfo import ZoneInfo

import httpx
import pytest

from sync_pipeline.sandbox.instagram import (
    InstagramSandboxConfig,
    InstagramSandboxState,
    ManualClock,
    create_app,
)
from sync_pipeline.sandbox.server import SandboxServer
from sync_pipeline_tests.serving import SlotServer

START = 1_750_000_000.0  # 2025-06-15T15:06:40Z
CLIENT_ID = "990602627938098"
SECRET = "ig-sandbox-secret"
REDIRECT = "https://localhost:8765/ig/callback"
DAY = 86400.0


@dataclass
class Sandbox:
    """A running Instagram sandbox plus an HTTP client pointed at it."""

    state: InstagramSandboxState
    server: SandboxServer
    client: httpx.Client
    clock: ManualClock

    def authorize(self, **overrides: str) -> httpx.Response:
        """GET the authorize endpoint with sensible defaults."""
        params = {
            "client_id": CLIENT_ID,
            "redirect_uri": REDIRECT,
            "response_type": "code",
            "scope": "instagram_business_basic",
            "state": "s-1",
            **overrides,
        }
        return self.client.get("/oauth/authorize", params=params)

    def code(self, **overrides: str) -> str:
        """An authorization code from an approved authorize request."""
        response = self.authorize(**overrides)
        assert response.status_code == 302, response.text
        return parse_qs(urlsplit(response.headers["location"]).query)["code"][0]

    def exchange(self, code: str, **overrides: str) -> httpx.Response:
        """POST the code to ``/oauth/access_token``."""
        form = {
            "client_id": CLIENT_ID,
            "client_secret": SECRET,
            "grant_type": "authorization_code",
            "redirect_uri": REDIRECT,
            "code": code,
            **overrides,
        }
        return self.client.post("/oauth/access_token", data=form)

    def short_token(self, user: str | None = None) -> str:
        """A short-lived token through the whole authorization flow."""
        code = self.code(**({"sandbox_user": user} if user else {}))
        response = self.exchange(code)
        assert response.status_code == 200, response.text
        token: str = response.json()["data"][0]["access_token"]
        return token

    def long_token(self, user: str | None = None) -> str:
        """A long-lived token: code flow, then ``ig_exchange_token``."""
        response = self.client.get(
            "/access_token",
            params={
                "grant_type": "ig_exchange_token",
                "client_secret": SECRET,
                "access_token": self.short_token(user),
            },
        )
        assert response.status_code == 200, response.text
        token: str = response.json()["access_token"]
        return token

    def get(self, path: str, token: str | None, **params: Any) -> httpx.Response:
        """GET a Graph path with ``access_token`` in the query string."""
        if token is not None:
            params["access_token"] = token
        return self.client.get(path, params=params)

    def all_media(self, token: str, **params: Any) -> list[list[dict[str, Any]]]:
        """Every page of ``/me/media``, following the absolute ``next`` URLs."""
        pages: list[list[dict[str, Any]]] = []
        response = self.get("/me/media", token, **params)
        while True:
            assert response.status_code == 200, response.text
            body = response.json()
            if body["data"]:
                pages.append(body["data"])
            next_url = body.get("paging", {}).get("next")
            if next_url is None:
                return pages
            assert next_url.startswith(self.server.url + "/me/media?")
            response = self.client.get(next_url)


SandboxFactory = Callable[..., Sandbox]


@pytest.fixture
def make_sandbox(served: SlotServer) -> Iterator[SandboxFactory]:
    """Factory of Instagram sandboxes (fresh state + app on the module's server + client)."""

    def factory(**config: Any) -> Sandbox:
        clock = ManualClock(START)
        config.setdefault("anchor_epoch", START)
        state = InstagramSandboxState(InstagramSandboxConfig(**config), now=clock)
        return Sandbox(state, served.server, served.plug(create_app(state)), clock)

    yield factory
    served.unplug()


@pytest.fixture
def sandbox(make_sandbox: SandboxFactory) -> Sandbox:
    """A default sandbox with three accounts and natural histories."""
    return make_sandbox()


def _usage(response: httpx.Response, account_id: str) -> dict[str, Any]:
    header = json.loads(response.headers["x-business-use-case-usage"])
    assert list(header) == [account_id]
    entry: dict[str, Any] = header[account_id][0]
    return entry


# ------------------------------------------------------------------------------ data


def test_histories_are_deterministic_and_realistic() -> None:
    a = InstagramSandboxState(InstagramSandboxConfig(anchor_epoch=START), now=ManualClock(START))
    b = InstagramSandboxState(InstagramSandboxConfig(anchor_epoch=START), now=ManualClock(START))
    assert a.list_accounts() == b.list_accounts()
    differs = False
    for account_id in a.account_ids():
        times = a.item_times(account_id)
        assert times == b.item_times(account_id)
        assert all(START - 121 * DAY < t < START for t in times)
        local = a.daily_counts(account_id)
        assert sum(local.values()) == len(times)
        assert len(local) < 120
        differs |= local != a.daily_counts(account_id, "UTC")
    assert len({a.account(i).tz for i in a.account_ids()}) == 3
    assert differs


def test_daily_counts_match_timestamps_in_local_days(sandbox: Sandbox) -> None:
    account_id = sandbox.state.account_ids()[1]
    token = sandbox.long_token(account_id)
    pages = sandbox.all_media(token, fields="id,timestamp", limit=100)
    zone = ZoneInfo(sandbox.state.account(account_id).tz)
    by_day = Counter(
        datetime.strptime(m["timestamp"], "%Y-%m-%dT%H:%M:%S%z").astimezone(zone).date().isoformat()
        for page in pages
        for m in page
    )
    assert dict(sorted(by_day.items())) == sandbox.state.daily_counts(account_id)


# ----------------------------------------------------------------------------- OAuth


def test_business_login_flow(sandbox: Sandbox) -> None:
    redirect = sandbox.authorize(
        scope="instagram_business_basic,instagram_business_manage_comments"
    )
    assert redirect.status_code == 302
    location = urlsplit(redirect.headers["location"])
    assert location.fragment == "_"  # Instagram appends #_
    query = parse_qs(location.query)
    assert query["state"] == ["s-1"]
    response = sandbox.exchange(query["code"][0])
    assert response.status_code == 200
    first = sandbox.state.account_ids()[0]
    (entry,) = response.json()["data"]
    assert entry["user_id"] == first
    assert entry["permissions"] == "instagram_business_basic,instagram_business_manage_comments"
    long = sandbox.get(
        "/access_token",
        None,
        grant_type="ig_exchange_token",
        client_secret=SECRET,
        access_token=entry["access_token"],
    )
    assert long.status_code == 200
    assert set(long.json()) == {"access_token", "token_type", "expires_in"}
    assert long.json()["token_type"] == "bearer"
    assert long.json()["expires_in"] == 5_184_000
    me = sandbox.get("/v23.0/me", long.json()["access_token"], fields="user_id,username")
    assert me.status_code == 200
    account = sandbox.state.account(first)
    assert me.json() == {"user_id": first, "username": account.username, "id": first}
    assert sandbox.get("/me", sandbox.short_token()).json() == {
        "id": sandbox.state.account_ids()[1]
    }


def test_flat_token_response_shape(make_sandbox: SandboxFactory) -> None:
    sb = make_sandbox(token_response_shape="flat")
    body = sb.exchange(sb.code()).json()
    assert set(body) == {"access_token", "user_id", "permissions"}
    assert body["user_id"] == int(sb.state.account_ids()[0])
    assert body["permissions"] == ["instagram_business_basic"]


def test_bearer_header_is_accepted(sandbox: Sandbox) -> None:
    token = sandbox.short_token()
    response = sandbox.client.get("/me", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 200


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("wrong_secret", "Error validating client secret."),
        ("reused_code", "This authorization code has been used"),
        ("wrong_redirect_uri", "make sure your redirect_uri is identical"),
        ("unknown_code", "Invalid authorization code"),
        ("expired_code", "This authorization code has expired"),
        ("wrong_client", "Invalid platform app"),
        ("wrong_grant", "Invalid grant_type"),
    ],
)
def test_code_exchange_errors(sandbox: Sandbox, case: str, message: str) -> None:
    code = sandbox.code()
    overrides: dict[str, str] = {}
    if case == "wrong_secret":
        overrides["client_secret"] = "nope"
    elif case == "reused_code":
        assert sandbox.exchange(code).status_code == 200
    elif case == "wrong_redirect_uri":
        overrides["redirect_uri"] = REDIRECT + "/other"
    elif case == "unknown_code":
        code = "made-up"
    elif case == "expired_code":
        sandbox.clock.advance(3601)
    elif case == "wrong_client":
        overrides["client_id"] = "1"
    else:
        overrides["grant_type"] = "client_credentials"
    response = sandbox.exchange(code, **overrides)
    assert response.status_code == 400
    body = response.json()
    assert set(body) == {"error_type", "code", "error_message"}
    assert body["error_type"] == "OAuthException" and body["code"] == 400
    assert message in body["error_message"]


def test_code_with_fragment_suffix_is_accepted(sandbox: Sandbox) -> None:
    assert sandbox.exchange(sandbox.code() + "#_").status_code == 200


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"client_id": "1"}, "Invalid platform app"),
        ({"response_type": "token2"}, 'Only response type "code"'),
        ({"scope": "instagram_business_manage_comments"}, "instagram_business_basic is required"),
        ({"scope": "business_basic"}, "Invalid scope field(s): business_basic"),
        ({"sandbox_user": "nobody"}, "Unknown sandbox_user"),
    ],
)
def test_authorize_errors(sandbox: Sandbox, overrides: dict[str, str], message: str) -> None:
    response = sandbox.authorize(**overrides)
    assert response.status_code == 400
    assert message in response.json()["error_message"]


def test_authorize_denied_redirects_with_error(sandbox: Sandbox) -> None:
    response = sandbox.authorize(sandbox_deny="1")
    assert response.status_code == 302
    query = parse_qs(urlsplit(response.headers["location"]).query)
    assert query == {
        "error": ["access_denied"],
        "error_reason": ["user_denied"],
        "error_description": ["The user denied your request."],
        "state": ["s-1"],
    }


def test_redirect_uri_must_be_registered(make_sandbox: SandboxFactory) -> None:
    sb = make_sandbox(redirect_uris=(REDIRECT,))
    assert sb.authorize().status_code == 302
    response = sb.authorize(redirect_uri="https://evil.example/cb")
    assert response.status_code == 400
    assert response.json()["error_message"] == "Invalid redirect_uri"


def test_short_lived_token_expires_after_an_hour(sandbox: Sandbox) -> None:
    token = sandbox.short_token()
    sandbox.clock.advance(3599)
    assert sandbox.get("/me", token).status_code == 200
    sandbox.clock.advance(1)
    response = sandbox.get("/me", token)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["type"] == "OAuthException"
    assert (error["code"], error["error_subcode"]) == (190, 463)
    assert error["message"].startswith("Error validating access token: Session has expired on")
    assert "PDT" in error["message"] and error["fbtrace_id"]
    assert response.headers["www-authenticate"].startswith('OAuth "Facebook Platform"')
    assert "x-business-use-case-usage" not in response.headers


def test_long_lived_refresh_rules(sandbox: Sandbox) -> None:
    token = sandbox.long_token()
    params = {"grant_type": "ig_refresh_token"}
    early = sandbox.get("/refresh_access_token", token, **params)
    assert early.status_code == 400
    assert early.json()["error"]["code"] == 100
    sandbox.clock.advance(DAY)
    refreshed = sandbox.get("/refresh_access_token", token, **params)
    assert refreshed.status_code == 200
    body = refreshed.json()
    assert body["token_type"] == "bearer" and body["expires_in"] == 5_184_000
    new = body["access_token"]
    assert new != token
    sandbox.clock.advance(59 * DAY)  # the first long-lived token is now 60 days old
    expired = sandbox.get("/refresh_access_token", token, **params)
    assert expired.status_code == 400
    assert expired.json()["error"]["error_subcode"] == 463
    assert sandbox.get("/me", new).status_code == 200
    assert sandbox.get("/v23.0/refresh_access_token", new, **params).status_code == 200
    assert sandbox.client.get("/_sandbox/stats").json()["refreshes"] == 2


@pytest.mark.parametrize(
    ("case", "code"),
    [("short_token_refresh", 100), ("long_token_exchange", 100), ("wrong_secret", 1)],
)
def test_token_endpoint_errors(sandbox: Sandbox, case: str, code: int) -> None:
    if case == "short_token_refresh":
        response = sandbox.get(
            "/refresh_access_token", sandbox.short_token(), grant_type="ig_refresh_token"
        )
    else:
        token = sandbox.long_token() if case == "long_token_exchange" else sandbox.short_token()
        secret = SECRET if case == "long_token_exchange" else "nope"
        response = sandbox.get(
            "/access_token", token, grant_type="ig_exchange_token", client_secret=secret
        )
    assert response.status_code == 400
    assert response.json()["error"]["code"] == code
    assert response.json()["error"]["type"] == "OAuthException"


@pytest.mark.parametrize(
    ("how", "code", "subcode"),
    [("revoked", 190, 458), ("garbage", 190, None), ("missing", 2500, None), ("expired", 190, 463)],
)
def test_token_problems_are_graph_errors(
    sandbox: Sandbox, how: str, code: int, subcode: int | None
) -> None:
    account_id = sandbox.state.account_ids()[0]
    token: str | None = sandbox.long_token()
    if how == "revoked":
        assert sandbox.client.post(f"/_sandbox/accounts/{account_id}/revoke").json()["revoked"] > 0
    elif how == "garbage":
        token = "IGAAgarbage"
    elif how == "missing":
        token = None
    else:
        assert sandbox.client.post(f"/_sandbox/accounts/{account_id}/expire").json()["expired"] > 0
    response = sandbox.get("/me/media", token)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == code
    assert error.get("error_subcode") == subcode


# ------------------------------------------------------------------------------ media


@pytest.mark.parametrize(
    ("count", "limit", "page_size"),
    [
        (0, None, 25),
        (1, None, 25),
        (25, None, 25),
        (26, None, 25),
        (250, 100, 100),
        (230, 500, 100),
    ],
)
def test_media_pages_to_completion(
    make_sandbox: SandboxFactory, count: int, limit: int | None, page_size: int
) -> None:
    sb = make_sandbox(accounts=1, media_counts={0: count})
    account_id = sb.state.account_ids()[0]
    token = sb.long_token()
    params: dict[str, Any] = {"fields": "id,timestamp,media_type,permalink"}
    if limit is not None:
        params["limit"] = limit
    pages = sb.all_media(token, **params)
    assert len(pages) == -(-count // page_size)
    assert all(len(p) == page_size for p in pages[:-1])
    media = [m for p in pages for m in p]
    ids = [m["id"] for m in media]
    assert len(ids) == len(set(ids)) == count
    stamps = [m["timestamp"] for m in media]
    assert stamps == sorted(stamps, reverse=True)  # newest first
    assert all(m["media_type"] in {"IMAGE", "VIDEO", "CAROUSEL_ALBUM"} for m in media)
    assert all(m["permalink"].startswith("https://www.instagram.com/p/") for m in media)
    assert sum(sb.state.daily_counts(account_id).values()) == count


def test_default_fields_previous_link_and_cursors(sandbox: Sandbox) -> None:
    token = sandbox.long_token()
    first = sandbox.get("/me/media", token, limit=5).json()
    assert set(first["data"][0]) == {"id"}
    assert "previous" not in first["paging"]
    second = sandbox.client.get(first["paging"]["next"]).json()
    assert second["paging"]["cursors"]["before"] != first["paging"]["cursors"]["after"]
    back = sandbox.client.get(second["paging"]["previous"]).json()
    assert back["data"] == first["data"]
    again = sandbox.get("/me/media", token, limit=5, after=first["paging"]["cursors"]["after"])
    assert again.json()["data"] == second["data"]


def test_since_and_until_filter(sandbox: Sandbox) -> None:
    account_id = sandbox.state.account_ids()[2]
    token = sandbox.long_token(account_id)
    since, until = int(START - 40 * DAY), int(START - 10 * DAY)
    pages = sandbox.all_media(token, fields="timestamp", since=since, until=until)
    got = [m for p in pages for m in p]
    expected = [t for t in sandbox.state.item_times(account_id) if since <= t < until]
    assert len(got) == len(expected) > 0


def test_node_lookup_for_user_and_media(sandbox: Sandbox) -> None:
    first, second = sandbox.state.account_ids()[:2]
    token = sandbox.long_token(first)
    user = sandbox.get(f"/{first}", token, fields="username,media_count,account_type").json()
    assert user["media_count"] == len(sandbox.state.item_times(first))
    media_id = sandbox.get("/me/media", token, limit=1).json()["data"][0]["id"]
    media = sandbox.get(f"/v23.0/{media_id}", token, fields="media_type,owner,timestamp").json()
    assert media["owner"] == {"id": first} and media["id"] == media_id
    other = sandbox.get(f"/{second}/media", token)
    assert other.status_code == 400
    assert (other.json()["error"]["code"], other.json()["error"]["error_subcode"]) == (100, 33)
    assert other.json()["error"]["type"] == "GraphMethodException"


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"fields": "id,colour"}, "nonexisting field (colour) on node type (Media)"),
        ({"limit": "lots"}, "Param limit must be a number"),
        ({"after": "not-a-cursor"}, "Invalid cursor"),
        ({"since": "last tuesday"}, "Param since"),
    ],
)
def test_bad_parameters_are_code_100(
    sandbox: Sandbox, params: dict[str, str], message: str
) -> None:
    account_id = sandbox.state.account_ids()[0]
    response = sandbox.get("/me/media", sandbox.long_token(), **params)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == 100 and error["type"] == "OAuthException"
    assert message in error["message"]
    assert _usage(response, account_id)["call_count"] == 0  # 1 call of 200: 0 %
    assert sandbox.state.stats()["buc_calls_in_window"] == {account_id: 1}


def test_missing_basic_permission_is_code_10(sandbox: Sandbox) -> None:
    account_id = sandbox.state.account_ids()[0]
    token = sandbox.client.post(
        f"/_sandbox/accounts/{account_id}/tokens",
        json={"scope": "instagram_business_manage_comments"},
    ).json()["access_token"]
    assert sandbox.get("/me", token).json()["error"]["code"] == 10


# ---------------------------------------------------------------- Business Use Case


def test_buc_usage_header_throttling_and_recovery(make_sandbox: SandboxFactory) -> None:
    sb = make_sandbox(buc_call_limit=4, buc_window_seconds=3600)
    account_id = sb.state.account_ids()[0]
    token = sb.long_token()
    calls = []
    for _ in range(4):
        response = sb.get("/me", token)
        assert response.status_code == 200
        calls.append(_usage(response, account_id))
        sb.clock.advance(600)
    assert [c["call_count"] for c in calls] == [25, 50, 75, 100]
    assert calls[0] == {
        "type": "instagram",
        "call_count": 25,
        "total_cputime": 12,
        "total_time": 12,
        "estimated_time_to_regain_access": 0,
    }
    assert calls[-1]["estimated_time_to_regain_access"] == 30  # first call leaves in 30 min
    throttled = sb.get("/me/media", token)
    assert throttled.status_code == 400
    assert throttled.json()["error"]["code"] == 80002
    assert throttled.json()["error"]["is_transient"] is True
    assert "too many calls to this Instagram account" in throttled.json()["error"]["message"]
    usage = _usage(throttled, account_id)
    assert usage["call_count"] == 100 and usage["estimated_time_to_regain_access"] == 20
    assert sb.client.get("/_sandbox/stats").json()["throttled"] == 1
    sb.clock.advance(20 * 60)  # the oldest call leaves the rolling hour
    recovered = sb.get("/me", token)
    assert recovered.status_code == 200
    assert _usage(recovered, account_id)["call_count"] == 100
    other = sb.long_token()  # another app-user pair has its own budget
    assert sb.get("/me", other).status_code == 200


def test_buc_throttle_status_is_configurable(make_sandbox: SandboxFactory) -> None:
    sb = make_sandbox(buc_call_limit=1, throttle_http_status=429)
    token = sb.long_token()
    assert sb.get("/me", token).status_code == 200
    assert sb.get("/me", token).status_code == 429


def test_buc_disabled_keeps_header(make_sandbox: SandboxFactory) -> None:
    sb = make_sandbox(buc_call_limit=2, rate_limits_enabled=False)
    account_id = sb.state.account_ids()[0]
    token = sb.long_token()
    responses = [sb.get("/me", token) for _ in range(4)]
    assert [r.status_code for r in responses] == [200] * 4
    assert [_usage(r, account_id)["call_count"] for r in responses] == [50, 100, 100, 100]


def test_exhaust_control_throttles_next_call(sandbox: Sandbox) -> None:
    account_id = sandbox.state.account_ids()[0]
    token = sandbox.long_token()
    result = sandbox.client.post("/_sandbox/exhaust", json={"account": account_id}).json()
    assert result["calls_in_window"] == 200
    response = sandbox.get("/me", token)
    assert response.json()["error"]["code"] == 80002
    assert _usage(response, account_id)["estimated_time_to_regain_access"] == 60
    sandbox.client.post("/_sandbox/reset-usage")
    assert sandbox.get("/me", token).status_code == 200


# --------------------------------------------------------------------------- faults


@pytest.mark.parametrize(
    ("fault", "status", "code"),
    [
        ({"kind": "5xx"}, 500, 2),
        ({"kind": "5xx", "status": 503}, 503, 2),
        ({"kind": "error", "status": 404}, 404, 100),
        ({"kind": "error", "status": 403}, 403, 10),
        ({"kind": "429"}, 400, 80002),
        ({"kind": "timeout", "delay": 0.05}, 504, 2),
    ],
)
def test_faults_render_as_graph_errors(
    sandbox: Sandbox, fault: dict[str, Any], status: int, code: int
) -> None:
    account_id = sandbox.state.account_ids()[0]
    token = sandbox.long_token()
    sandbox.client.post("/_sandbox/faults", json={**fault, "path_contains": "/media"})
    response = sandbox.get("/me/media", token)
    assert response.status_code == status
    assert response.json()["error"]["code"] == code
    assert "fbtrace_id" in response.json()["error"]
    if fault["kind"] == "429":
        usage = _usage(response, account_id)
        assert usage["call_count"] == 100 and usage["estimated_time_to_regain_access"] >= 1
    assert sandbox.get("/me/media", token).status_code == 200
    assert sandbox.client.get("/_sandbox/stats").json()["faults_fired"] == 1


def test_fault_matches_principal(sandbox: Sandbox) -> None:
    first, second = sandbox.state.account_ids()[:2]
    token_a, token_b = sandbox.long_token(first), sandbox.long_token(second)
    sandbox.client.post("/_sandbox/faults", json={"kind": "5xx", "principal": second})
    assert sandbox.get("/me", token_a).status_code == 200
    assert sandbox.get("/me", token_b).status_code == 500
    assert sandbox.get("/me", token_b).status_code == 200


def test_timeout_and_slow_faults(sandbox: Sandbox) -> None:
    token = sandbox.long_token()
    sandbox.client.post("/_sandbox/faults", json={"kind": "timeout", "delay": 5})
    with pytest.raises(httpx.ReadTimeout):
        sandbox.client.get("/me", params={"access_token": token}, timeout=0.3)
    sandbox.client.post("/_sandbox/faults", json={"kind": "slow", "delay": 0.2})
    started = time.monotonic()
    assert sandbox.get("/me", token).status_code == 200
    assert time.monotonic() - started >= 0.2


def test_fault_on_code_exchange(sandbox: Sandbox) -> None:
    code = sandbox.code()
    sandbox.client.post(
        "/_sandbox/faults", json={"kind": "5xx", "path_contains": "/oauth/access_token"}
    )
    assert sandbox.exchange(code).status_code == 500
    assert sandbox.exchange(code).status_code == 200  # the code was not consumed


# ---------------------------------------------------------------------- control API


def test_control_accounts_items_and_daily_counts(sandbox: Sandbox) -> None:
    accounts = sandbox.client.get("/_sandbox/accounts").json()
    assert [a["id"] for a in accounts] == sandbox.state.account_ids()
    assert {"id", "handle", "time_zone", "media_count", "connected"} <= set(accounts[0])
    created = sandbox.client.post(
        "/_sandbox/accounts", json={"count": 7, "time_zone": "America/Los_Angeles"}
    ).json()
    account_id = created["id"]
    assert created["media_count"] == 7
    sandbox.client.post(f"/_sandbox/accounts/{account_id}/items", json={"count": 2})
    at = START - 3 * DAY
    sandbox.client.post(f"/_sandbox/accounts/{account_id}/items", json={"count": 1, "at": at})
    token = sandbox.client.post(f"/_sandbox/accounts/{account_id}/tokens", json={}).json()
    assert token["kind"] == "long" and token["expires_in"] == 5_184_000
    pages = sandbox.all_media(token["access_token"], fields="timestamp")
    assert sum(len(p) for p in pages) == 10
    counts = sandbox.client.get(f"/_sandbox/accounts/{account_id}/daily-counts").json()
    assert counts == sandbox.state.daily_counts(account_id) and sum(counts.values()) == 10
    day = datetime.fromtimestamp(at, ZoneInfo("America/Los_Angeles")).date().isoformat()
    assert counts[day] >= 1
    short = sandbox.client.post(
        f"/_sandbox/accounts/{account_id}/tokens", json={"kind": "short"}
    ).json()
    assert short["expires_in"] == 3600


def test_control_stats_and_clock(sandbox: Sandbox) -> None:
    account_id = sandbox.state.account_ids()[0]
    token = sandbox.long_token()
    sandbox.get("/me", token)
    sandbox.get("/me/media", token)
    sandbox.get("/me", "bad")
    stats = sandbox.client.get("/_sandbox/stats").json()
    assert stats["requests_by_endpoint"] == {
        "GET /oauth/authorize": 1,
        "POST /oauth/access_token": 1,
        "GET /access_token": 1,
        "GET /me": 2,
        "GET /{ig-user-id}/media": 1,
    }
    assert stats["responses_by_status"] == {"302": 1, "200": 4, "400": 1}
    assert stats["code_exchanges"] == 1 and stats["long_lived_exchanges"] == 1
    assert stats["buc_calls_in_window"] == {account_id: 2}
    now = sandbox.client.post("/_sandbox/clock", json={"advance": 3600}).json()["now"]
    assert now == START + 3600
    assert sandbox.client.get("/_sandbox/stats").json()["buc_calls_in_window"] == {}
    assert sandbox.client.post("/_sandbox/accounts/nobody/revoke").status_code == 400
