"""Tests of the YouTube sandbox over real HTTP on loopback."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import parse_qs, urlsplit
from zoneinfo import ZoneInfo

import httpx
import pytest

from sync_pipeline.sandbox.server import SandboxServer
from sync_pipeline.sandbox.youtube import (
    ManualClock,
    YouTubeSandboxConfig,
    YouTubeSandboxState,
    create_app,
)
from sync_pipeline_tests.serving import SlotServer

START = 1_750_000_000.0  # 2025-06-15T15:06:40Z = 08:06:40 PDT
CLIENT_ID = YouTubeSandboxConfig.client_id
SECRET = YouTubeSandboxConfig.client_secret
REDIRECT = "http://localhost:8765/oauth/google"
READONLY = "https://www.googleapis.com/auth/youtube.readonly"
LA = ZoneInfo("America/Los_Angeles")
AUTH_ERROR = {
    "error": {
        "code": 401,
        "message": "Request had invalid authentication credentials. Expected OAuth 2 access"
        " token, login cookie or other valid authentication credential. See"
        " https://developers.google.com/identity/sign-in/web/devconsole-project.",
        "errors": [
            {
                "message": "Invalid Credentials",
                "domain": "global",
                "reason": "authError",
                "location": "Authorization",
                "locationType": "header",
            }
        ],
        "status": "UNAUTHENTICATED",
    }
}
QUOTA_MESSAGE = (
    "The request cannot be completed because you have exceeded your"
    ' <a href="/youtube/v3/getting-started#quota">quota</a>.'
)


@dataclass
class Sandbox:
    """A running YouTube sandbox plus an HTTP client pointed at it."""

    state: YouTubeSandboxState
    server: SandboxServer
    client: httpx.Client
    clock: ManualClock

    def authorize(self, **params: str) -> httpx.Response:
        """GET Google's authorization endpoint (auto-approved)."""
        query = {
            "client_id": CLIENT_ID,
            "redirect_uri": REDIRECT,
            "response_type": "code",
            "scope": READONLY,
            "access_type": "offline",
            "state": "st",
            **params,
        }
        return self.client.get("/o/oauth2/v2/auth", params=query)

    def code(self, **params: str) -> str:
        """An authorization code from the redirect."""
        response = self.authorize(**params)
        assert response.status_code == 302, response.text
        return parse_qs(urlsplit(response.headers["location"]).query)["code"][0]

    def token(self, **form: str) -> httpx.Response:
        """POST the token endpoint with client credentials."""
        return self.client.post(
            "/token", data={"client_id": CLIENT_ID, "client_secret": SECRET, **form}
        )

    def login(self, user: str | None = None, **params: str) -> dict[str, Any]:
        """Run the OAuth code flow over HTTP; the token response."""
        code = self.code(**({"sandbox_user": user} if user else {}), **params)
        response = self.token(grant_type="authorization_code", code=code, redirect_uri=REDIRECT)
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    def get(self, path: str, token: str | None, **params: Any) -> httpx.Response:
        """GET a Data API path."""
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return self.client.get(f"/youtube/v3/{path}", params=params, headers=headers)

    def account(self, index: int) -> dict[str, Any]:
        """Control view of the index-th account."""
        return dict(self.state.list_accounts()[index])


SandboxFactory = Callable[..., Sandbox]


@pytest.fixture
def make_sandbox(served: SlotServer) -> Iterator[SandboxFactory]:
    """Factory of a sandbox (state + app behind the module's server + client) for one test."""

    def factory(start: float = START, **config: Any) -> Sandbox:
        clock = ManualClock(start)
        config.setdefault("accounts", 3)
        state = YouTubeSandboxState(YouTubeSandboxConfig(**config), now=clock)
        return Sandbox(state, served.server, served.plug(create_app(state)), clock)

    yield factory
    served.unplug()


@pytest.fixture
def sandbox(make_sandbox: SandboxFactory) -> Sandbox:
    """A sandbox with three generated accounts."""
    return make_sandbox()


def _all_items(sb: Sandbox, token: str, playlist: str, max_results: int | None) -> list[Any]:
    pages: list[Any] = []
    page_token: str | None = None
    while True:
        params: dict[str, Any] = {"part": "snippet,contentDetails", "playlistId": playlist}
        if max_results is not None:
            params["maxResults"] = max_results
        if page_token:
            params["pageToken"] = page_token
        response = sb.get("playlistItems", token, **params)
        assert response.status_code == 200, response.text
        body = response.json()
        pages.append(body)
        page_token = body.get("nextPageToken")
        if not page_token:
            return pages


# ----------------------------------------------------------------------------- OAuth


def test_oauth_code_flow_offline_access(sandbox: Sandbox) -> None:
    redirect = sandbox.authorize()
    assert redirect.status_code == 302
    location = urlsplit(redirect.headers["location"])
    query = parse_qs(location.query)
    assert query["state"] == ["st"] and query["scope"] == [READONLY]
    assert query["code"][0].startswith("4/0A")
    body = sandbox.token(
        grant_type="authorization_code", code=query["code"][0], redirect_uri=REDIRECT
    ).json()
    assert body["access_token"].startswith("ya29.") and body["refresh_token"].startswith("1//")
    assert {k: body[k] for k in ("expires_in", "scope", "token_type")} == {
        "expires_in": 3599,
        "scope": READONLY,
        "token_type": "Bearer",
    }
    channels = sandbox.get("channels", body["access_token"], part="id", mine="true").json()
    assert channels["items"][0]["id"] == sandbox.account(0)["channel_id"]
    second = sandbox.login()["access_token"]
    mine = sandbox.get("channels", second, part="id", mine="true").json()
    assert mine["items"][0]["id"] == sandbox.account(1)["channel_id"]


@pytest.mark.parametrize(
    ("params", "refresh"),
    [
        ({"access_type": "online"}, False),
        ({"access_type": "offline"}, True),
    ],
)
def test_refresh_token_only_with_offline_access(
    sandbox: Sandbox, params: dict[str, str], refresh: bool
) -> None:
    body = sandbox.login(**params)
    assert ("refresh_token" in body) is refresh
    assert body["expires_in"] == 3599


@pytest.mark.parametrize(("prompt", "refresh"), [("", False), ("consent", True)])
def test_second_authorization_needs_prompt_consent_for_refresh_token(
    sandbox: Sandbox, prompt: str, refresh: bool
) -> None:
    account = sandbox.account(0)["id"]
    assert "refresh_token" in sandbox.login(account)
    again = sandbox.login(account, prompt=prompt) if prompt else sandbox.login(account)
    assert ("refresh_token" in again) is refresh


@pytest.mark.parametrize(
    ("case", "status", "body"),
    [
        ("wrong_secret", 401, {"error": "invalid_client", "error_description": "Unauthorized"}),
        (
            "unknown_client",
            401,
            {"error": "invalid_client", "error_description": "The OAuth client was not found."},
        ),
        ("reused_code", 400, {"error": "invalid_grant", "error_description": "Bad Request"}),
        ("expired_code", 400, {"error": "invalid_grant", "error_description": "Bad Request"}),
        (
            "wrong_redirect_uri",
            400,
            {"error": "redirect_uri_mismatch", "error_description": "Bad Request"},
        ),
        (
            "no_code",
            400,
            {"error": "invalid_request", "error_description": "Missing required parameter: code"},
        ),
        (
            "bad_grant_type",
            400,
            {
                "error": "unsupported_grant_type",
                "error_description": "Invalid grant_type: password",
            },
        ),
    ],
)
def test_bad_code_exchange(sandbox: Sandbox, case: str, status: int, body: dict[str, str]) -> None:
    form = {"grant_type": "authorization_code", "code": sandbox.code(), "redirect_uri": REDIRECT}
    if case == "wrong_secret":
        form["client_secret"] = "nope"
    elif case == "unknown_client":
        form["client_id"] = "999-other.apps.googleusercontent.com"
    elif case == "reused_code":
        assert sandbox.token(**form).status_code == 200
    elif case == "expired_code":
        sandbox.clock.advance(601)
    elif case == "wrong_redirect_uri":
        form["redirect_uri"] = "http://localhost:8765/other"
    elif case == "no_code":
        del form["code"]
    elif case == "bad_grant_type":
        form["grant_type"] = "password"
    response = sandbox.token(**form)
    assert response.status_code == status
    assert response.json() == body


def test_token_endpoint_accepts_basic_auth(sandbox: Sandbox) -> None:
    response = sandbox.client.post(
        "/token",
        data={"grant_type": "authorization_code", "code": sandbox.code(), "redirect_uri": REDIRECT},
        auth=(CLIENT_ID, SECRET),
    )
    assert response.status_code == 200
    assert "refresh_token" in response.json()


def test_refresh_does_not_rotate(sandbox: Sandbox) -> None:
    first = sandbox.login()
    sandbox.clock.advance(3000)
    refreshed = sandbox.token(grant_type="refresh_token", refresh_token=first["refresh_token"])
    assert refreshed.status_code == 200
    body = refreshed.json()
    assert "refresh_token" not in body
    assert body["access_token"] != first["access_token"]
    assert body == {**body, "expires_in": 3599, "scope": READONLY, "token_type": "Bearer"}
    assert sandbox.get("channels", body["access_token"], part="id", mine="true").status_code == 200
    old = sandbox.get("channels", first["access_token"], part="id", mine="true")
    assert old.status_code == 200  # the previous access token lives until it expires
    again = sandbox.token(grant_type="refresh_token", refresh_token=first["refresh_token"])
    assert again.status_code == 200
    assert sandbox.client.get("/_sandbox/stats").json()["refreshes"] == 2


@pytest.mark.parametrize("how", ["control", "revoke_endpoint", "lifetime"])
def test_dead_refresh_token_is_invalid_grant(make_sandbox: SandboxFactory, how: str) -> None:
    sb = make_sandbox(refresh_token_lifetime=7 * 86400)
    tokens = sb.login()
    assert tokens["refresh_token_expires_in"] == 7 * 86400
    if how == "control":
        account = sb.account(0)["id"]
        assert sb.client.post(f"/_sandbox/accounts/{account}/revoke").json()["revoked"] >= 2
    elif how == "revoke_endpoint":
        assert sb.client.post("/revoke", data={"token": tokens["access_token"]}).status_code == 200
    else:
        sb.clock.advance(7 * 86400)
    response = sb.token(grant_type="refresh_token", refresh_token=tokens["refresh_token"])
    assert response.status_code == 400
    assert response.json() == {
        "error": "invalid_grant",
        "error_description": "Token has been expired or revoked.",
    }


@pytest.mark.parametrize("how", ["clock", "control", "garbage"])
def test_expired_or_unknown_access_token_is_401(sandbox: Sandbox, how: str) -> None:
    token = sandbox.login()["access_token"]
    if how == "clock":
        sandbox.clock.advance(3599)
    elif how == "control":
        sandbox.client.post(f"/_sandbox/accounts/{sandbox.account(0)['id']}/expire")
    else:
        token = "ya29.garbage"
    response = sandbox.get("channels", token, part="id", mine="true")
    assert response.status_code == 401
    assert response.json() == AUTH_ERROR
    assert response.headers["www-authenticate"].startswith('Bearer realm="https://accounts')
    assert sandbox.client.get("/_sandbox/stats").json()["quota"]["used_today"] == 0


def test_token_lifetime_follows_time_scale(make_sandbox: SandboxFactory) -> None:
    sb = make_sandbox(time_scale=3599.0)
    body = sb.login()
    assert body["expires_in"] == 1
    sb.clock.advance(1)
    assert sb.get("channels", body["access_token"], part="id", mine="true").status_code == 401


@pytest.mark.parametrize(
    ("params", "status", "error"),
    [
        ({"client_id": "unknown"}, 401, "invalid_client"),
        ({"redirect_uri": "http://evil.example/cb"}, 400, "redirect_uri_mismatch"),
        ({"scope": "https://www.googleapis.com/auth/bogus"}, 400, "invalid_scope"),
    ],
)
def test_authorize_error_pages(
    make_sandbox: SandboxFactory, params: dict[str, str], status: int, error: str
) -> None:
    sb = make_sandbox(redirect_uris=(REDIRECT,))
    response = sb.authorize(**params)
    assert response.status_code == status
    assert f"Error {status}: {error}" in response.text


def test_authorize_deny_and_chosen_account(sandbox: Sandbox) -> None:
    denied = sandbox.authorize(sandbox_deny="1")
    assert parse_qs(urlsplit(denied.headers["location"]).query) == {
        "state": ["st"],
        "error": ["access_denied"],
    }
    chosen = sandbox.account(2)
    token = sandbox.login(chosen["handle"])["access_token"]
    mine = sandbox.get("channels", token, part="id", mine="true").json()
    assert mine["items"][0]["id"] == chosen["channel_id"]


def test_insufficient_scope_is_403(sandbox: Sandbox) -> None:
    token = sandbox.login(scope="openid email")["access_token"]
    response = sandbox.get("channels", token, part="id", mine="true")
    assert response.status_code == 403
    error = response.json()["error"]
    assert error["errors"][0]["reason"] == "insufficientPermissions"
    assert error["status"] == "PERMISSION_DENIED"


# ------------------------------------------------------------------------- data


def test_channel_resource_parts(sandbox: Sandbox) -> None:
    token = sandbox.login()["access_token"]
    response = sandbox.get("channels", token, part="contentDetails,snippet", mine="true")
    body = response.json()
    assert body["kind"] == "youtube#channelListResponse" and body["etag"]
    assert body["pageInfo"] == {"totalResults": 1, "resultsPerPage": 5}
    channel = body["items"][0]
    account = sandbox.account(0)
    assert set(channel) == {"kind", "etag", "id", "snippet", "contentDetails"}
    assert channel["kind"] == "youtube#channel" and channel["id"].startswith("UC")
    assert channel["contentDetails"] == {
        "relatedPlaylists": {"likes": "", "uploads": account["uploads_playlist_id"]}
    }
    assert channel["snippet"]["customUrl"] == account["handle"]
    stats = sandbox.get("channels", token, part="statistics", id=account["channel_id"]).json()
    assert stats["items"][0]["statistics"]["videoCount"] == str(account["videos"])
    by_handle = sandbox.get("channels", token, part="id", forHandle=account["handle"]).json()
    assert by_handle["items"][0]["id"] == account["channel_id"]


@pytest.mark.parametrize(("max_results", "size"), [(None, 5), (7, 7), (50, 50)])
def test_uploads_page_to_completion(sandbox: Sandbox, max_results: int | None, size: int) -> None:
    token = sandbox.login()["access_token"]
    account = sandbox.account(0)
    playlist = account["uploads_playlist_id"]
    pages = _all_items(sandbox, token, playlist, max_results)
    items = [i for p in pages for i in p["items"]]
    assert len(items) == account["videos"] > 20
    assert [len(p["items"]) for p in pages[:-1]] == [size] * (len(pages) - 1)
    assert all(p["pageInfo"] == {"totalResults": len(items), "resultsPerPage": size} for p in pages)
    ids = [i["contentDetails"]["videoId"] for i in items]
    assert ids == sandbox.state.video_ids(account["id"]) and len(set(ids)) == len(ids)
    published = [i["snippet"]["publishedAt"] for i in items]
    assert published == sorted(published, reverse=True)
    assert [i["snippet"]["position"] for i in items] == list(range(len(items)))
    first = items[0]
    assert first["kind"] == "youtube#playlistItem"
    assert first["snippet"]["resourceId"] == {"kind": "youtube#video", "videoId": ids[0]}
    assert first["contentDetails"]["videoPublishedAt"] == first["snippet"]["publishedAt"]
    assert "prevPageToken" not in pages[0]
    if len(pages) > 1:
        assert "prevPageToken" in pages[1]


@pytest.mark.parametrize("index", [0, 1, 2])
def test_upload_counts_per_local_day_match_daily_counts(sandbox: Sandbox, index: int) -> None:
    token = sandbox.login()["access_token"]
    account = sandbox.account(index)
    pages = _all_items(sandbox, token, account["uploads_playlist_id"], 50)
    zone = ZoneInfo(account["time_zone"])
    local = Counter(
        datetime.fromisoformat(i["contentDetails"]["videoPublishedAt"])
        .astimezone(zone)
        .date()
        .isoformat()
        for page in pages
        for i in page["items"]
    )
    assert dict(sorted(local.items())) == sandbox.state.daily_counts(account["id"])


def test_local_days_differ_from_utc_days(sandbox: Sandbox) -> None:
    accounts = sandbox.state.list_accounts()
    local = [sandbox.state.daily_counts(a["id"]) for a in accounts]
    utc = [sandbox.state.daily_counts(a["id"], "UTC") for a in accounts]
    assert [sum(d.values()) for d in local] == [sum(d.values()) for d in utc]
    assert sum(a != b for a, b in zip(local, utc, strict=True)) >= 2


def test_new_uploads_appear_first(sandbox: Sandbox) -> None:
    c = sandbox.client
    created = c.post("/_sandbox/accounts", json={"history_days": 0, "time_zone": "UTC"}).json()
    assert created["videos"] == 0
    token = c.post(f"/_sandbox/accounts/{created['id']}/tokens").json()["access_token"]
    playlist = created["uploads_playlist_id"]
    empty = sandbox.get("playlistItems", token, part="id", playlistId=playlist).json()
    assert empty["items"] == [] and empty["pageInfo"]["totalResults"] == 0
    old = c.post(
        f"/_sandbox/accounts/{created['id']}/items", json={"count": 1, "at": START - 86400}
    ).json()["ids"]
    new = c.post(f"/_sandbox/accounts/{created['handle']}/items", json={"count": 2}).json()["ids"]
    listed = sandbox.get("playlistItems", token, part="contentDetails", playlistId=playlist).json()
    assert [i["contentDetails"]["videoId"] for i in listed["items"]][-1] == old[0]
    assert set(new) == {i["contentDetails"]["videoId"] for i in listed["items"][:2]}
    counts = c.get(f"/_sandbox/accounts/{created['id']}/daily-counts").json()
    assert counts == {"2025-06-14": 1, "2025-06-15": 2}


@pytest.mark.parametrize(
    ("params", "status", "reason"),
    [
        ({"part": "snippet", "playlistId": "UUnope"}, 404, "playlistNotFound"),
        ({"playlistId": "{uploads}"}, 400, "required"),
        ({"part": "snippet,bogus", "playlistId": "{uploads}"}, 400, "unknownPart"),
        ({"part": "snippet", "playlistId": "{uploads}", "maxResults": 51}, 400, "invalidParameter"),
        (
            {"part": "snippet", "playlistId": "{uploads}", "pageToken": "junk"},
            400,
            "invalidPageToken",
        ),
        ({"part": "snippet"}, 400, "missingRequiredParameter"),
    ],
)
def test_playlist_items_errors(
    sandbox: Sandbox, params: dict[str, Any], status: int, reason: str
) -> None:
    token = sandbox.login()["access_token"]
    uploads = sandbox.account(0)["uploads_playlist_id"]
    query = {k: str(v).format(uploads=uploads) for k, v in params.items()}
    response = sandbox.get("playlistItems", token, **query)
    assert response.status_code == status
    error = response.json()["error"]
    assert error["code"] == status
    assert error["errors"][0]["reason"] == reason
    if reason == "playlistNotFound":
        assert error["errors"][0]["domain"] == "youtube.playlistItem"
        assert error["errors"][0]["location"] == "playlistId"
    # Even failing calls cost a unit of quota.
    assert sandbox.client.get("/_sandbox/stats").json()["quota"]["used_today"] == 1


def test_page_token_of_another_playlist_is_invalid(sandbox: Sandbox) -> None:
    token = sandbox.login()["access_token"]
    first, second = sandbox.account(0), sandbox.account(1)
    page = sandbox.get(
        "playlistItems", token, part="id", playlistId=first["uploads_playlist_id"]
    ).json()
    other = sandbox.get(
        "playlistItems",
        token,
        part="id",
        playlistId=second["uploads_playlist_id"],
        pageToken=page["nextPageToken"],
    )
    assert other.status_code == 400


# ------------------------------------------------------------------------- quota


def test_quota_exhaustion_and_pacific_midnight_reset(make_sandbox: SandboxFactory) -> None:
    sb = make_sandbox(daily_quota=3)
    token = sb.login()["access_token"]
    responses = [sb.get("channels", token, part="id", mine="true") for _ in range(4)]
    assert [r.status_code for r in responses] == [200, 200, 200, 403]
    assert responses[-1].json() == {
        "error": {
            "code": 403,
            "message": QUOTA_MESSAGE,
            "errors": [
                {"message": QUOTA_MESSAGE, "domain": "youtube.quota", "reason": "quotaExceeded"}
            ],
        }
    }
    assert not any(k.lower().startswith("x-ratelimit") for k in responses[0].headers)
    stats = sb.client.get("/_sandbox/stats").json()
    midnight = datetime(2025, 6, 16, tzinfo=LA).timestamp()
    assert stats["quota_exceeded"] == 1
    assert stats["quota"] == {
        "daily_quota": 3,
        "used_today": 3,
        "remaining": 0,
        "day_start": midnight - 86400,
        "next_reset": midnight,
        "next_reset_iso": "2025-06-16T07:00:00Z",
        "seconds_to_reset": int(midnight - START),
    }
    sb.clock.set(midnight - 1)
    fresh = sb.login()["access_token"]  # the first token has expired by now
    assert sb.get("channels", fresh, part="id", mine="true").status_code == 403
    sb.clock.set(midnight)
    assert sb.get("channels", fresh, part="id", mine="true").status_code == 200


@pytest.mark.parametrize(
    ("local", "reset_utc"),
    [
        (datetime(2025, 1, 15, 12, 0), "2025-01-16T08:00:00Z"),  # PST, UTC-8
        (datetime(2025, 7, 15, 12, 0), "2025-07-16T07:00:00Z"),  # PDT, UTC-7
        (datetime(2025, 3, 8, 23, 30), "2025-03-09T08:00:00Z"),  # day before spring forward
        (datetime(2025, 3, 9, 12, 0), "2025-03-10T07:00:00Z"),  # 23-hour day
        (datetime(2025, 11, 2, 12, 0), "2025-11-03T08:00:00Z"),  # 25-hour day
    ],
)
def test_quota_day_is_dst_correct(local: datetime, reset_utc: str) -> None:
    now = local.replace(tzinfo=LA).timestamp()
    state = YouTubeSandboxState(YouTubeSandboxConfig(accounts=0), now=ManualClock(now))
    assert state.quota()["next_reset_iso"] == reset_utc
    start, end = state.quota_day()
    assert datetime.fromtimestamp(start, LA).time().isoformat() == "00:00:00"
    assert start <= now < end


@pytest.mark.parametrize("remaining", [0, 2])
def test_control_exhaust_leaves_remaining(sandbox: Sandbox, remaining: int) -> None:
    token = sandbox.login()["access_token"]
    body = sandbox.client.post("/_sandbox/exhaust", json={"remaining": remaining}).json()
    assert body["remaining"] == remaining and body["used_today"] == 10_000 - remaining
    statuses = [
        sandbox.get("channels", token, part="id", mine="true").status_code for _ in range(3)
    ]
    assert statuses == [200] * remaining + [403] * (3 - remaining)


def test_disabled_limits_still_count_quota(make_sandbox: SandboxFactory) -> None:
    sb = make_sandbox(daily_quota=1, rate_limits_enabled=False)
    token = sb.login()["access_token"]
    assert [sb.get("channels", token, part="id", mine="true").status_code for _ in range(3)] == [
        200
    ] * 3
    assert sb.client.get("/_sandbox/stats").json()["quota"]["used_today"] == 3


# ------------------------------------------------------------------------ faults


@pytest.mark.parametrize(
    ("fault", "status", "reason"),
    [
        ({"kind": "5xx"}, 503, "backendError"),
        ({"kind": "5xx", "status": 500}, 500, "backendError"),
        ({"kind": "429"}, 429, "rateLimitExceeded"),
        ({"kind": "error", "status": 404}, 404, "notFound"),
        ({"kind": "error", "status": 401}, 401, "authError"),
        ({"kind": "timeout", "delay": 0.05}, 504, "backendError"),
    ],
)
def test_injected_faults_use_google_errors(
    sandbox: Sandbox, fault: dict[str, Any], status: int, reason: str
) -> None:
    token = sandbox.login()["access_token"]
    sandbox.client.post("/_sandbox/faults", json={**fault, "path_contains": "/playlistItems"})
    uploads = sandbox.account(0)["uploads_playlist_id"]
    assert sandbox.get("channels", token, part="id", mine="true").status_code == 200
    response = sandbox.get("playlistItems", token, part="id", playlistId=uploads)
    assert response.status_code == status
    error = response.json()["error"]
    assert error["code"] == status and error["errors"][0]["reason"] == reason
    assert sandbox.get("playlistItems", token, part="id", playlistId=uploads).status_code == 200


def test_fault_matches_principal_and_token_endpoint(sandbox: Sandbox) -> None:
    first, second = sandbox.account(0)["id"], sandbox.account(1)["id"]
    token = sandbox.login(first)
    c = sandbox.client
    c.post("/_sandbox/faults", json={"kind": "5xx", "principal": second})
    assert sandbox.get("channels", token["access_token"], part="id", mine="true").status_code == 200
    assert len(c.get("/_sandbox/faults").json()) == 1
    c.delete("/_sandbox/faults")
    c.post("/_sandbox/faults", json={"kind": "5xx", "path_contains": "/token", "principal": first})
    failed = sandbox.token(grant_type="refresh_token", refresh_token=token["refresh_token"])
    assert failed.status_code == 503 and failed.json()["error"] == "internal_failure"
    ok = sandbox.token(grant_type="refresh_token", refresh_token=token["refresh_token"])
    assert ok.status_code == 200


def test_slow_fault_still_answers(sandbox: Sandbox) -> None:
    token = sandbox.login()["access_token"]
    sandbox.client.post("/_sandbox/faults", json={"kind": "slow", "delay": 0.05})
    assert sandbox.get("channels", token, part="id", mine="true").status_code == 200
    assert sandbox.client.get("/_sandbox/faults").json() == []


# ---------------------------------------------------------------------- control


def test_control_accounts_tokens_and_stats(sandbox: Sandbox) -> None:
    c = sandbox.client
    listed = c.get("/_sandbox/accounts").json()
    assert [a["id"] for a in listed] == sandbox.state.account_ids()
    assert set(listed[0]) == {
        "id",
        "handle",
        "channel_id",
        "uploads_playlist_id",
        "time_zone",
        "videos",
        "connected",
    }
    assert len({a["time_zone"] for a in listed}) == 3
    assert all(re.fullmatch(r"UC[A-Za-z0-9_-]{22}", a["channel_id"]) for a in listed)
    account = listed[0]["id"]
    tokens = c.post(f"/_sandbox/accounts/{account}/tokens", json={"scope": READONLY}).json()
    assert (
        sandbox.get("channels", tokens["access_token"], part="id", mine="true").status_code == 200
    )
    assert c.get("/_sandbox/accounts").json()[0]["connected"] is True
    assert c.post("/_sandbox/accounts/nobody/items", json={"count": 1}).status_code == 400
    stats = c.get("/_sandbox/stats").json()
    assert stats["requests_by_endpoint"] == {"GET /youtube/v3/channels": 1}
    assert stats["responses_by_status"] == {"200": 1}
    assert c.post("/_sandbox/reset-stats").json() == {"ok": True}
    assert c.get("/_sandbox/stats").json()["requests_total"] == 0
    c.post("/_sandbox/reset-usage")
    assert c.get("/_sandbox/stats").json()["quota"]["used_today"] == 0
    assert c.post("/_sandbox/clock", json={"advance": 3599}).json() == {"now": START + 3599}
    assert (
        sandbox.get("channels", tokens["access_token"], part="id", mine="true").status_code == 401
    )


def test_data_is_deterministic_per_seed() -> None:
    def snapshot(seed: int) -> list[Any]:
        state = YouTubeSandboxState(
            YouTubeSandboxConfig(seed=seed, accounts=2), now=ManualClock(START)
        )
        return [(a, state.daily_counts(a["id"])) for a in state.list_accounts()]

    assert snapshot(3) == snapshot(3)
    assert snapshot(3) != snapshot(4)
