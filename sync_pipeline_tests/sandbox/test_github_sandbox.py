"""Tests of the GitHub sandbox over real HTTP on loopback."""

from __future__ import annotations

import re
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from sync_pipeline.sandbox.github import (
    GitHubSandboxConfig,
    GitHubSandboxState,
    ManualClock,
    create_app,
)
from sync_pipeline.sandbox.server import SandboxServer
from sync_pipeline_tests.serving import SlotServer

START = 1_750_000_000.0  # 2025-06-15T15:06:40Z, a Sunday, 40 s into a minute
CLIENT_ID = GitHubSandboxConfig.client_id
SECRET = GitHubSandboxConfig.client_secret
REDIRECT = "http://localhost:8765/callback"
CALENDAR_QUERY = """
query($login: String!, $from: DateTime!, $to: DateTime!) {
  user(login: $login) {
    contributionsCollection(from: $from, to: $to) {
      contributionCalendar {
        totalContributions
        weeks { contributionDays { date contributionCount } }
      }
    }
  }
  rateLimit { cost remaining resetAt }
}
"""
LINK_RE = re.compile(r'<([^>]+)>; rel="(\w+)"')


@dataclass
class Sandbox:
    """A running GitHub sandbox plus an HTTP client pointed at it."""

    state: GitHubSandboxState
    server: SandboxServer
    client: httpx.Client
    clock: ManualClock

    def authorize(self, **params: str) -> httpx.Response:
        """GET the authorize endpoint (auto-approved unless ``sandbox_deny``)."""
        query = {"client_id": CLIENT_ID, "redirect_uri": REDIRECT, "state": "st", **params}
        return self.client.get("/login/oauth/authorize", params=query)

    def code(self, **params: str) -> str:
        """An authorization code from the authorize redirect."""
        response = self.authorize(**params)
        assert response.status_code == 302, response.text
        return parse_qs(urlsplit(response.headers["location"]).query)["code"][0]

    def token_request(self, **form: str) -> httpx.Response:
        """POST the token endpoint asking for JSON."""
        body = {"client_id": CLIENT_ID, "client_secret": SECRET, **form}
        return self.client.post(
            "/login/oauth/access_token", data=body, headers={"Accept": "application/json"}
        )

    def login(self, user: str | None = None) -> dict[str, Any]:
        """Run the OAuth code flow over HTTP; the token response."""
        code = self.code(**({"sandbox_user": user} if user else {}))
        response = self.token_request(code=code, redirect_uri=REDIRECT)
        body: dict[str, Any] = response.json()
        assert "access_token" in body, body
        return body

    def get(self, path: str, token: str | None = None, **params: Any) -> httpx.Response:
        """GET an API path, with a bearer token when given."""
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return self.client.get(path, params=params, headers=headers)

    def graphql(self, token: str, query: str, **variables: Any) -> httpx.Response:
        """POST a GraphQL query."""
        return self.client.post(
            "/graphql",
            json={"query": query, "variables": variables},
            headers={"Authorization": f"bearer {token}"},
        )

    def login_name(self, index: int) -> str:
        """Login of the index-th generated account."""
        return str(self.state.list_accounts()[index]["login"])


SandboxFactory = Callable[..., Sandbox]


@pytest.fixture
def make_sandbox(served: SlotServer) -> Iterator[SandboxFactory]:
    """Factory of a sandbox (state + app behind the module's server + client) for one test."""

    def factory(**config: Any) -> Sandbox:
        clock = ManualClock(START)
        config.setdefault("accounts", 3)
        state = GitHubSandboxState(GitHubSandboxConfig(**config), now=clock)
        return Sandbox(state, served.server, served.plug(create_app(state)), clock)

    yield factory
    served.unplug()


@pytest.fixture
def sandbox(make_sandbox: SandboxFactory) -> Sandbox:
    """A sandbox with three generated accounts."""
    return make_sandbox()


def _follow(sb: Sandbox, token: str, first: httpx.Response) -> list[list[dict[str, Any]]]:
    pages, response = [], first
    while True:
        assert response.status_code == 200, response.text
        pages.append(response.json())
        links = dict((rel, url) for url, rel in LINK_RE.findall(response.headers.get("link", "")))
        if "next" not in links:
            return pages
        response = sb.client.get(links["next"], headers={"Authorization": f"Bearer {token}"})


# ----------------------------------------------------------------------------- OAuth


def test_oauth_code_flow_issues_expiring_github_app_tokens(sandbox: Sandbox) -> None:
    redirect = sandbox.authorize(scope="read:user")
    assert redirect.status_code == 302
    location = urlsplit(redirect.headers["location"])
    assert f"{location.scheme}://{location.netloc}{location.path}" == REDIRECT
    query = parse_qs(location.query)
    assert query["state"] == ["st"] and re.fullmatch(r"[0-9a-f]{20}", query["code"][0])
    response = sandbox.token_request(code=query["code"][0], redirect_uri=REDIRECT)
    assert response.status_code == 200
    body = response.json()
    assert re.fullmatch(r"ghu_[A-Za-z0-9]{36}", body["access_token"])
    assert re.fullmatch(r"ghr_[A-Za-z0-9]{36}", body["refresh_token"])
    assert {k: v for k, v in body.items() if k not in ("access_token", "refresh_token")} == {
        "expires_in": 28800,
        "refresh_token_expires_in": 15897600,
        "scope": "",
        "token_type": "bearer",
    }
    me = sandbox.get("/user", body["access_token"])
    assert me.status_code == 200
    assert me.json()["login"] == sandbox.login_name(0)
    assert me.json()["id"] == sandbox.state.user_ids()[0]
    second = sandbox.get("/user", sandbox.login()["access_token"]).json()
    assert second["login"] == sandbox.login_name(1)  # first account not yet connected


def test_token_response_is_form_encoded_without_accept_json(sandbox: Sandbox) -> None:
    code = sandbox.code()
    response = sandbox.client.post(
        "/login/oauth/access_token",
        data={"client_id": CLIENT_ID, "client_secret": SECRET, "code": code},
    )
    assert response.headers["content-type"].startswith("application/x-www-form-urlencoded")
    fields = parse_qs(response.text, keep_blank_values=True)
    assert fields["token_type"] == ["bearer"] and fields["expires_in"] == ["28800"]
    assert fields["access_token"][0].startswith("ghu_")


@pytest.mark.parametrize(
    ("case", "error"),
    [
        ("wrong_secret", "incorrect_client_credentials"),
        ("unknown_client", "incorrect_client_credentials"),
        ("reused_code", "bad_verification_code"),
        ("unknown_code", "bad_verification_code"),
        ("expired_code", "bad_verification_code"),
        ("wrong_redirect_uri", "redirect_uri_mismatch"),
    ],
)
def test_bad_code_exchange_is_http_200_with_error(sandbox: Sandbox, case: str, error: str) -> None:
    code = sandbox.code()
    form = {"code": code, "redirect_uri": REDIRECT}
    if case == "wrong_secret":
        form["client_secret"] = "nope"
    elif case == "unknown_client":
        form["client_id"] = "Iv1.other"
    elif case == "reused_code":
        assert "access_token" in sandbox.token_request(**form).json()
    elif case == "unknown_code":
        form["code"] = "0" * 20
    elif case == "expired_code":
        sandbox.clock.advance(601)
    elif case == "wrong_redirect_uri":
        form["redirect_uri"] = "http://localhost:8765/elsewhere"
    response = sandbox.token_request(**form)
    assert response.status_code == 200
    body = response.json()
    assert body["error"] == error
    assert body["error_description"] and body["error_uri"].startswith("https://docs.github.com/")
    assert "access_token" not in body


def test_refresh_rotates_and_kills_old_tokens(sandbox: Sandbox) -> None:
    first = sandbox.login()
    sandbox.clock.advance(3600)
    response = sandbox.token_request(
        grant_type="refresh_token", refresh_token=first["refresh_token"]
    )
    second = response.json()
    assert second["refresh_token"] != first["refresh_token"]
    assert second["access_token"] != first["access_token"]
    assert second["expires_in"] == 28800
    assert sandbox.get("/user", second["access_token"]).status_code == 200
    assert sandbox.get("/user", first["access_token"]).status_code == 401
    reuse = sandbox.token_request(grant_type="refresh_token", refresh_token=first["refresh_token"])
    assert reuse.status_code == 200
    assert reuse.json()["error"] == "bad_refresh_token"
    third = sandbox.token_request(grant_type="refresh_token", refresh_token=second["refresh_token"])
    assert third.json()["access_token"].startswith("ghu_")
    assert sandbox.client.get("/_sandbox/stats").json()["refreshes"] == 2


def test_refresh_token_dies_after_six_months(sandbox: Sandbox) -> None:
    tokens = sandbox.login()
    sandbox.clock.advance(15897600)
    response = sandbox.token_request(
        grant_type="refresh_token", refresh_token=tokens["refresh_token"]
    )
    assert response.json()["error"] == "bad_refresh_token"


@pytest.mark.parametrize("how", ["clock", "control"])
def test_expired_access_token_is_bad_credentials(sandbox: Sandbox, how: str) -> None:
    tokens = sandbox.login()
    assert sandbox.get("/user", tokens["access_token"]).status_code == 200
    if how == "clock":
        sandbox.clock.advance(28800)
    else:
        login = sandbox.login_name(0)
        assert sandbox.client.post(f"/_sandbox/accounts/{login}/expire").json() == {"expired": 1}
    response = sandbox.get("/user", tokens["access_token"])
    assert response.status_code == 401
    assert response.json() == {
        "message": "Bad credentials",
        "documentation_url": "https://docs.github.com/rest",
        "status": "401",
    }
    fresh = sandbox.token_request(grant_type="refresh_token", refresh_token=tokens["refresh_token"])
    assert sandbox.get("/user", fresh.json()["access_token"]).status_code == 200


@pytest.mark.parametrize("time_scale", [1.0, 3600.0])
def test_token_lifetimes_follow_time_scale(make_sandbox: SandboxFactory, time_scale: float) -> None:
    sb = make_sandbox(time_scale=time_scale)
    body = sb.login()
    assert body["expires_in"] == int(28800 / time_scale)
    assert body["refresh_token_expires_in"] == int(15897600 / time_scale)
    sb.clock.advance(28800 / time_scale)
    assert sb.get("/user", body["access_token"]).status_code == 401


def test_authorize_deny_and_chosen_user(sandbox: Sandbox) -> None:
    denied = sandbox.authorize(sandbox_deny="1")
    query = parse_qs(urlsplit(denied.headers["location"]).query)
    assert query["error"] == ["access_denied"] and query["state"] == ["st"]
    chosen = sandbox.login_name(2)
    token = sandbox.login(chosen)["access_token"]
    assert sandbox.get("/user", token).json()["login"] == chosen


def test_authorize_checks_client_and_registered_callback(make_sandbox: SandboxFactory) -> None:
    sb = make_sandbox(callback_url="http://localhost:8765/callback")
    assert sb.authorize(client_id="unknown").status_code == 404
    assert sb.authorize(redirect_uri="http://localhost:8765/callback/sub").status_code == 302
    mismatch = sb.authorize(redirect_uri="http://evil.example/callback")
    location = urlsplit(mismatch.headers["location"])
    assert location.netloc == "localhost:8765"
    assert parse_qs(location.query)["error"] == ["redirect_uri_mismatch"]


def test_app_revocation_endpoints(sandbox: Sandbox) -> None:
    tokens = sandbox.login()
    bad = sandbox.client.request(
        "DELETE",
        f"/applications/{CLIENT_ID}/grant",
        json={"access_token": tokens["access_token"]},
        auth=(CLIENT_ID, "wrong"),
    )
    assert bad.status_code == 404
    response = sandbox.client.request(
        "DELETE",
        f"/applications/{CLIENT_ID}/grant",
        json={"access_token": tokens["access_token"]},
        auth=(CLIENT_ID, SECRET),
    )
    assert response.status_code == 204
    assert sandbox.get("/user", tokens["access_token"]).status_code == 401
    refresh = sandbox.token_request(
        grant_type="refresh_token", refresh_token=tokens["refresh_token"]
    )
    assert refresh.json()["error"] == "bad_refresh_token"


# ------------------------------------------------------------------------ events


@pytest.mark.parametrize(("per_page", "size"), [(None, 30), (7, 7), (100, 100), (500, 100)])
def test_events_pages_to_completion(sandbox: Sandbox, per_page: int | None, size: int) -> None:
    login = sandbox.login_name(1)
    token = sandbox.login(login)["access_token"]
    expected = sandbox.state.event_ids(login)
    assert 100 < len(expected) < 300
    params = {} if per_page is None else {"per_page": per_page}
    first = sandbox.get(f"/users/{login}/events", token, **params)
    assert first.headers["x-poll-interval"] == "60"
    pages = _follow(sandbox, token, first)
    assert [len(p) for p in pages[:-1]] == [size] * (len(pages) - 1)
    assert 1 <= len(pages[-1]) <= size
    flat = [e["id"] for p in pages for e in p]
    assert flat == expected
    times = [e["created_at"] for p in pages for e in p]
    assert times == sorted(times, reverse=True)
    last_link = dict((r, u) for u, r in LINK_RE.findall(first.headers["link"]))["last"]
    assert parse_qs(urlsplit(last_link).query)["page"] == [str(len(pages))]
    event = pages[0][0]
    assert set(event) == {"id", "type", "actor", "repo", "payload", "public", "created_at"}
    assert event["actor"]["login"] == login and event["public"] is True
    assert event["created_at"].endswith("Z")


def test_event_payloads_have_github_shapes(sandbox: Sandbox) -> None:
    login = sandbox.login_name(0)
    events = sandbox.get(f"/users/{login}/events", None, per_page=100).json()
    kinds = Counter(e["type"] for e in events)
    assert kinds["PushEvent"] > kinds["PullRequestEvent"] > 0
    push = next(e for e in events if e["type"] == "PushEvent")
    assert set(push["payload"]) == {"repository_id", "push_id", "ref", "head", "before"}
    pr = next(e for e in events if e["type"] == "PullRequestEvent")
    assert pr["payload"]["action"] == "opened"
    assert pr["payload"]["pull_request"]["number"] == pr["payload"]["number"]


def test_feed_keeps_ninety_days_and_three_hundred_events(sandbox: Sandbox) -> None:
    c = sandbox.client
    new = c.post("/_sandbox/accounts", json={"history_days": 0}).json()
    login = new["login"]
    old = c.post(
        f"/_sandbox/accounts/{login}/items", json={"count": 1, "at": START - 91 * 86400}
    ).json()["ids"]
    recent = c.post(
        f"/_sandbox/accounts/{login}/items", json={"count": 1, "at": START - 89 * 86400}
    ).json()["ids"]
    assert sandbox.state.event_ids(login) == recent
    assert old[0] not in sandbox.state.event_ids(login)
    contributions = sandbox.state.daily_counts(login, "UTC")
    assert sum(contributions.values()) == 2  # the calendar keeps both
    c.post(f"/_sandbox/accounts/{login}/items", json={"count": 350})
    token = sandbox.login(login)["access_token"]
    pages = _follow(sandbox, token, sandbox.get(f"/users/{login}/events", token, per_page=100))
    assert sum(len(p) for p in pages) == 300
    limited = sandbox.get(f"/users/{login}/events", token, per_page=100, page=4)
    assert limited.status_code == 422
    assert limited.json()["message"].startswith("In order to keep the API fast for everyone")


def test_events_of_unknown_user_is_404(sandbox: Sandbox) -> None:
    response = sandbox.get("/users/nobody-here/events", sandbox.login()["access_token"])
    assert response.status_code == 404
    assert response.json()["message"] == "Not Found"


@pytest.mark.parametrize("form", ["exact", "strong", "star", "list"])
def test_conditional_request_is_304_and_free(sandbox: Sandbox, form: str) -> None:
    login = sandbox.login_name(0)
    token = sandbox.login(login)["access_token"]
    first = sandbox.get(f"/users/{login}/events", token)
    etag = first.headers["etag"]
    assert etag.startswith('W/"')
    header = {
        "exact": etag,
        "strong": etag.removeprefix("W/"),
        "star": "*",
        "list": f'"nope", {etag}',
    }[form]
    again = sandbox.client.get(
        f"/users/{login}/events",
        headers={"Authorization": f"Bearer {token}", "If-None-Match": header},
    )
    assert again.status_code == 304
    assert again.content == b""
    assert again.headers["etag"] == etag
    assert again.headers["x-poll-interval"] == "60"
    assert again.headers["x-ratelimit-used"] == first.headers["x-ratelimit-used"] == "1"
    assert sandbox.client.get("/_sandbox/stats").json()["not_modified"] == 1
    if form != "star":
        sandbox.client.post(f"/_sandbox/accounts/{login}/items", json={"count": 1})
        changed = sandbox.client.get(
            f"/users/{login}/events",
            headers={"Authorization": f"Bearer {token}", "If-None-Match": header},
        )
        assert changed.status_code == 200
        assert changed.headers["etag"] != etag
        assert changed.headers["x-ratelimit-used"] == "2"


# -------------------------------------------------------------------- rate limits


def test_rate_limit_headers_per_resource(sandbox: Sandbox) -> None:
    token = sandbox.login()["access_token"]
    first = sandbox.get("/user", token)
    second = sandbox.get("/user", token)
    assert first.headers["x-ratelimit-limit"] == "5000"
    assert [r.headers["x-ratelimit-remaining"] for r in (first, second)] == ["4999", "4998"]
    assert second.headers["x-ratelimit-used"] == "2"
    assert second.headers["x-ratelimit-resource"] == "core"
    assert second.headers["x-ratelimit-reset"] == str(int(START + 3600))
    login = sandbox.login_name(0)
    graphql = sandbox.graphql(
        token,
        CALENDAR_QUERY,
        login=login,
        **{"from": "2025-01-01T00:00:00Z", "to": "2025-06-15T00:00:00Z"},
    )
    assert graphql.headers["x-ratelimit-resource"] == "graphql"
    assert graphql.headers["x-ratelimit-used"] == "1"
    assert graphql.json()["data"]["rateLimit"]["remaining"] == 4999
    limits = sandbox.get("/rate_limit", token)
    assert limits.json()["resources"]["core"]["used"] == 2
    assert limits.json()["resources"]["graphql"]["used"] == 1
    assert limits.headers["x-ratelimit-used"] == "2"  # /rate_limit itself is free


@pytest.mark.parametrize("status", [403, 429])
def test_core_limit_exhausted(make_sandbox: SandboxFactory, status: int) -> None:
    sb = make_sandbox(primary_limit_status=status)
    login = sb.login_name(0)
    token = sb.login(login)["access_token"]
    sb.get("/user", token)
    exhausted = sb.client.post("/_sandbox/exhaust", json={"account": login, "resource": "core"})
    assert exhausted.json()[0]["remaining"] == 0
    response = sb.get("/user", token)
    assert response.status_code == status
    user_id = sb.state.user_ids()[0]
    assert response.json()["message"] == f"API rate limit exceeded for user ID {user_id}."
    assert response.headers["x-ratelimit-remaining"] == "0"
    assert response.headers["x-ratelimit-used"] == "5000"
    reset = int(response.headers["x-ratelimit-reset"])
    assert reset == int(START + 3600)
    ok_graphql = sb.graphql(token, "{ viewer { login } }")
    assert ok_graphql.json() == {"data": {"viewer": {"login": login}}}
    sb.clock.set(reset)
    after = sb.get("/user", token)
    assert after.status_code == 200
    assert after.headers["x-ratelimit-used"] == "1"
    assert sb.client.get("/_sandbox/stats").json()["rate_limited"] == 1


def test_graphql_limit_exhausted_is_200_with_rate_limit_error(sandbox: Sandbox) -> None:
    login = sandbox.login_name(0)
    token = sandbox.login(login)["access_token"]
    sandbox.client.post("/_sandbox/exhaust", json={"account": login, "resource": "graphql"})
    response = sandbox.graphql(token, "{ viewer { login } }")
    assert response.status_code == 200
    user_id = sandbox.state.user_ids()[0]
    assert response.json() == {
        "errors": [
            {
                "type": "RATE_LIMIT",
                "code": "graphql_rate_limit",
                "message": f"API rate limit already exceeded for user ID {user_id}.",
            }
        ]
    }
    assert response.headers["x-ratelimit-remaining"] == "0"
    assert sandbox.get("/user", token).status_code == 200


def test_hour_window_starts_at_first_request(make_sandbox: SandboxFactory) -> None:
    sb = make_sandbox(core_limit=2)
    token = sb.login()["access_token"]
    sb.clock.advance(100)
    assert [sb.get("/user", token).status_code for _ in range(3)] == [200, 200, 403]
    sb.clock.advance(3599)
    assert sb.get("/user", token).status_code == 403
    sb.clock.advance(1)
    fresh = sb.get("/user", token)
    assert fresh.status_code == 200
    assert fresh.headers["x-ratelimit-reset"] == str(int(sb.clock() + 3600))


def test_disabled_limits_keep_headers(make_sandbox: SandboxFactory) -> None:
    sb = make_sandbox(core_limit=2, rate_limits_enabled=False)
    token = sb.login()["access_token"]
    responses = [sb.get("/user", token) for _ in range(3)]
    assert [r.status_code for r in responses] == [200, 200, 200]
    assert responses[-1].headers["x-ratelimit-remaining"] == "0"
    assert responses[-1].headers["x-ratelimit-used"] == "3"


def test_secondary_points_per_minute(make_sandbox: SandboxFactory) -> None:
    sb = make_sandbox(secondary_rest_points_per_minute=3)
    token = sb.login()["access_token"]
    assert [sb.get("/user", token).status_code for _ in range(3)] == [200] * 3
    limited = sb.get("/user", token)
    assert limited.status_code == 403
    assert limited.headers["retry-after"] == "20"  # START is 40 s into its minute
    assert limited.json()["message"].startswith("You have exceeded a secondary rate limit.")
    assert limited.headers["x-ratelimit-used"] == "3"
    sb.clock.advance(20)
    assert sb.get("/user", token).status_code == 200
    assert sb.client.get("/_sandbox/stats").json()["secondary_limited"] == 1


@pytest.mark.parametrize(
    ("path", "token", "status", "message", "limit"),
    [
        ("/user", None, 401, "Requires authentication", "60"),
        ("/user", "ghu_nope", 401, "Bad credentials", "60"),
        ("/users/{login}/events", None, 200, None, "60"),
        ("/graphql", None, 401, "This endpoint requires you to be authenticated.", None),
        ("/graphql", "ghu_nope", 401, "Bad credentials", None),
    ],
)
def test_unauthenticated_requests(
    sandbox: Sandbox,
    path: str,
    token: str | None,
    status: int,
    message: str | None,
    limit: str | None,
) -> None:
    url = path.format(login=sandbox.login_name(0))
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    if url == "/graphql":
        response = sandbox.client.post(url, json={"query": "{ viewer { login } }"}, headers=headers)
    else:
        response = sandbox.client.get(url, headers=headers)
    assert response.status_code == status
    if message is not None:
        assert response.json()["message"] == message
    assert response.headers.get("x-ratelimit-limit") == limit


def test_user_agent_is_required(sandbox: Sandbox) -> None:
    response = sandbox.client.get("/user", headers={"User-Agent": ""})
    assert response.status_code == 403
    assert "User-Agent" in response.text


# ------------------------------------------------------------------------ faults


@pytest.mark.parametrize(
    ("fault", "status", "check"),
    [
        ({"kind": "5xx"}, 502, lambda r: "Unicorn" in r.text),
        ({"kind": "5xx", "status": 500}, 500, lambda r: r.json() == {"message": "Server Error"}),
        (
            {"kind": "5xx", "status": 503},
            503,
            lambda r: r.json()["message"] == "Service Unavailable",
        ),
        ({"kind": "429"}, 429, lambda r: r.headers["retry-after"] == "60"),
        ({"kind": "secondary"}, 403, lambda r: "secondary rate limit" in r.json()["message"]),
        ({"kind": "error", "status": 404}, 404, lambda r: r.json()["message"] == "Not Found"),
        ({"kind": "error", "status": 401}, 401, lambda r: r.json()["message"] == "Bad credentials"),
        ({"kind": "timeout", "delay": 0.05}, 502, lambda r: "in time" in r.json()["message"]),
    ],
)
def test_injected_faults_fire_once(
    sandbox: Sandbox, fault: dict[str, Any], status: int, check: Callable[[httpx.Response], bool]
) -> None:
    token = sandbox.login()["access_token"]
    assert sandbox.client.post("/_sandbox/faults", json=fault).status_code == 200
    response = sandbox.get("/user", token)
    assert response.status_code == status
    assert check(response)
    assert sandbox.get("/user", token).status_code == 200
    assert sandbox.client.get("/_sandbox/faults").json() == []


def test_faults_match_path_and_principal(sandbox: Sandbox) -> None:
    first, second = sandbox.state.user_ids()[:2]
    token = sandbox.login(str(first))["access_token"]
    c = sandbox.client
    c.post("/_sandbox/faults", json={"kind": "5xx", "status": 500, "principal": second})
    assert sandbox.get("/user", token).status_code == 200
    c.post("/_sandbox/faults", json={"kind": "timeout", "delay": 0.05, "path_contains": "/graphql"})
    assert sandbox.get("/user", token).status_code == 200
    timed_out = sandbox.graphql(token, "{ viewer { login } }")
    assert timed_out.status_code == 502
    assert timed_out.json()["data"] is None
    assert "Something went wrong" in timed_out.json()["errors"][0]["message"]
    assert len(c.get("/_sandbox/faults").json()) == 1
    assert c.delete("/_sandbox/faults").json() == {"cleared": 1}


def test_slow_fault_delays_then_answers(sandbox: Sandbox) -> None:
    token = sandbox.login()["access_token"]
    sandbox.client.post("/_sandbox/faults", json={"kind": "slow", "delay": 0.2})
    began = time.monotonic()
    response = sandbox.get("/user", token)
    assert response.status_code == 200
    assert time.monotonic() - began >= 0.2


def test_fault_on_token_endpoint(sandbox: Sandbox) -> None:
    tokens = sandbox.login()
    sandbox.client.post(
        "/_sandbox/faults", json={"kind": "5xx", "status": 500, "path_contains": "/login/oauth"}
    )
    failed = sandbox.token_request(
        grant_type="refresh_token", refresh_token=tokens["refresh_token"]
    )
    assert failed.status_code == 500
    ok = sandbox.token_request(grant_type="refresh_token", refresh_token=tokens["refresh_token"])
    assert ok.json()["access_token"].startswith("ghu_")


# ----------------------------------------------------------------------- GraphQL


def _calendar_days(body: dict[str, Any]) -> list[dict[str, Any]]:
    calendar = body["data"]["user"]["contributionsCollection"]["contributionCalendar"]
    return [d for week in calendar["weeks"] for d in week["contributionDays"]]


def test_contribution_calendar_matches_daily_counts(sandbox: Sandbox) -> None:
    login = sandbox.login_name(0)
    token = sandbox.login(login)["access_token"]
    frm, to = "2025-01-05T00:00:00Z", "2025-06-15T15:06:40Z"
    response = sandbox.graphql(token, CALENDAR_QUERY, login=login, **{"from": frm, "to": to})
    assert response.status_code == 200
    body = response.json()
    assert "errors" not in body
    days = _calendar_days(body)
    assert days[0]["date"] == "2025-01-05" and days[-1]["date"] == "2025-06-15"
    assert len(days) == (date(2025, 6, 15) - date(2025, 1, 5)).days + 1
    expected = sandbox.state.daily_counts(login, "UTC")
    assert {d["date"]: d["contributionCount"] for d in days if d["contributionCount"]} == expected
    total = body["data"]["user"]["contributionsCollection"]["contributionCalendar"]
    assert total["totalContributions"] == sum(expected.values()) > 0
    firsts = {date.fromisoformat(w["contributionDays"][0]["date"]) for w in total["weeks"]}
    assert {d.weekday() for d in firsts} == {6}  # every week starts on a Sunday here
    assert {len(w["contributionDays"]) for w in total["weeks"][:-1]} == {7}
    assert body["data"]["rateLimit"] == {
        "cost": 1,
        "remaining": 4999,
        "resetAt": datetime.fromtimestamp(START + 3600, UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }


def test_local_days_differ_from_utc_days(sandbox: Sandbox) -> None:
    accounts = sandbox.state.list_accounts()
    local = [sandbox.state.daily_counts(a["login"]) for a in accounts]
    utc = [sandbox.state.daily_counts(a["login"], "UTC") for a in accounts]
    totals = [a["contributions"] for a in accounts]
    assert [sum(d.values()) for d in local] == [sum(d.values()) for d in utc] == totals
    assert sum(a != b for a, b in zip(local, utc, strict=True)) >= 2
    assert len({a["time_zone"] for a in accounts}) == 3


def test_calendar_sees_new_items_at_their_utc_date(sandbox: Sandbox) -> None:
    c = sandbox.client
    login = c.post(
        "/_sandbox/accounts", json={"history_days": 0, "time_zone": "Asia/Tokyo"}
    ).json()["login"]
    at = datetime(2025, 6, 14, 20, 0, tzinfo=UTC).timestamp()  # 05:00 on the 15th in Tokyo
    c.post(f"/_sandbox/accounts/{login}/items", json={"count": 2, "at": at, "commits": 3})
    c.post(f"/_sandbox/accounts/{login}/items", json={"count": 1, "at": at, "type": "WatchEvent"})
    assert sandbox.state.daily_counts(login, "UTC") == {"2025-06-14": 6}
    assert sandbox.state.daily_counts(login) == {"2025-06-15": 6}
    assert sandbox.state.daily_counts(login, unit="events") == {"2025-06-15": 3}
    token = sandbox.login(login)["access_token"]
    body = sandbox.graphql(
        token,
        CALENDAR_QUERY,
        login=login,
        **{"from": "2025-06-13T00:00:00Z", "to": "2025-06-15T00:00:00Z"},
    ).json()
    assert [(d["date"], d["contributionCount"]) for d in _calendar_days(body)] == [
        ("2025-06-13", 0),
        ("2025-06-14", 6),
        ("2025-06-15", 0),
    ]


@pytest.mark.parametrize(
    ("query", "variables", "message", "extra"),
    [
        (
            CALENDAR_QUERY,
            {"from": "2024-01-01T00:00:00Z", "to": "2025-06-15T00:00:00Z"},
            "The total time spanned by 'from' and 'to' must not exceed 1 year",
            {"type": "VALIDATION", "data_user": None},
        ),
        (
            CALENDAR_QUERY,
            {"login": "nobody-here", "from": "2025-01-01T00:00:00Z", "to": "2025-06-15T00:00:00Z"},
            "Could not resolve to a User with the login of 'nobody-here'.",
            {"type": "NOT_FOUND", "data_user": None},
        ),
        (
            CALENDAR_QUERY,
            {"from": "yesterday", "to": "2025-06-15T00:00:00Z"},
            "Variable $from of type DateTime! was provided invalid value",
            {},
        ),
        (
            CALENDAR_QUERY,
            {"login": None, "from": "2025-01-01T00:00:00Z", "to": "2025-06-15T00:00:00Z"},
            "Variable $login of type String! was provided invalid value",
            {},
        ),
        ("{ viewer { login bogus } }", {}, "Field 'bogus' doesn't exist on type 'User'", {}),
        ("{ viewer }", {}, "Field must have selections", {}),
        ("{ viewer { login }", {}, "Unexpected end of document", {}),
        ("{ viewer { login } } }", {}, 'Parse error on "}" (RCURLY) at [1, 22]', {}),
        ('{ user(name: "x") { login } }', {}, "Field 'user' doesn't accept argument 'name'", {}),
        ("mutation { viewer { login } }", {}, "Schema is not configured for mutations", {}),
    ],
)
def test_graphql_errors(
    sandbox: Sandbox, query: str, variables: dict[str, Any], message: str, extra: dict[str, Any]
) -> None:
    login = sandbox.login_name(0)
    token = sandbox.login(login)["access_token"]
    response = sandbox.graphql(token, query, **{"login": login, **variables})
    assert response.status_code == 200
    body = response.json()
    assert body["errors"][0]["message"].startswith(message)
    if "type" in extra:
        assert body["errors"][0]["type"] == extra["type"]
        assert body["data"]["user"] is extra["data_user"]
    else:
        assert "data" not in body
        assert response.headers["x-ratelimit-used"] == "0"  # invalid queries cost nothing


def test_graphql_aliases_typename_and_totals(sandbox: Sandbox) -> None:
    login = sandbox.login_name(0)
    token = sandbox.login(login)["access_token"]
    query = """
    query Me($login: String!, $to: DateTime) {
      me: viewer { handle: login __typename databaseId }
      user(login: $login) {
        contributionsCollection(to: $to) {
          startedAt endedAt totalCommitContributions hasAnyContributions
          contributionCalendar { totalContributions }
        }
      }
      rateLimit { limit used }
    }
    """
    body = sandbox.client.post(
        "/graphql",
        json={
            "query": query,
            "variables": {"login": login, "to": "2025-06-15T00:00:00Z"},
            "operationName": "Me",
        },
        headers={"Authorization": f"token {token}"},
    ).json()
    assert body["data"]["me"] == {
        "handle": login,
        "__typename": "User",
        "databaseId": sandbox.state.user_ids()[0],
    }
    collection = body["data"]["user"]["contributionsCollection"]
    assert collection["startedAt"] == "2024-06-15T00:00:00Z"
    assert collection["endedAt"] == "2025-06-15T00:00:00Z"
    assert collection["hasAnyContributions"] is True
    assert (
        0
        < collection["totalCommitContributions"]
        <= collection["contributionCalendar"]["totalContributions"]
    )
    assert body["data"]["rateLimit"] == {"limit": 5000, "used": 1}


# ---------------------------------------------------------------------- control


def test_control_accounts_items_tokens_and_stats(sandbox: Sandbox) -> None:
    c = sandbox.client
    listed = c.get("/_sandbox/accounts").json()
    assert [a["id"] for a in listed] == sandbox.state.user_ids()
    assert set(listed[0]) >= {"id", "handle", "time_zone", "events", "contributions", "connected"}
    created = c.post("/_sandbox/accounts", json={"history_days": 0, "time_zone": "UTC"}).json()
    assert created["events"] == 0 and created["time_zone"] == "UTC"
    login = created["login"]
    ids = c.post(f"/_sandbox/accounts/{login}/items", json={"count": 3}).json()["ids"]
    tokens = c.post(f"/_sandbox/accounts/{created['id']}/tokens").json()
    assert tokens["token_type"] == "bearer"
    events = sandbox.get(f"/users/{login}/events", tokens["access_token"]).json()
    assert [e["id"] for e in events] == sorted(ids, reverse=True)
    counts = c.get(f"/_sandbox/accounts/{login}/daily-counts", params={"tz": "UTC"}).json()
    assert counts == {"2025-06-15": 3}
    assert c.post(f"/_sandbox/accounts/{login}/items", json={"type": "Bogus"}).status_code == 400
    assert c.post(f"/_sandbox/accounts/{login}/revoke").json()["revoked"] == 2
    assert sandbox.get("/user", tokens["access_token"]).status_code == 401
    stats = c.get("/_sandbox/stats").json()
    assert stats["requests_by_endpoint"]["GET /users/{username}/events"] == 1
    assert stats["responses_by_status"] == {"200": 1, "401": 1}
    assert stats["usage"][f"user:{created['id']}"]["core"]["used"] == 1
    assert c.post("/_sandbox/reset-stats").json() == {"ok": True}
    assert c.get("/_sandbox/stats").json()["requests_total"] == 0
    assert c.post("/_sandbox/clock", json={"advance": 60}).json() == {"now": START + 60}
    c.post("/_sandbox/reset-usage")
    assert c.get("/_sandbox/stats").json()["usage"] == {}


def test_data_is_deterministic_per_seed() -> None:
    def snapshot(seed: int) -> tuple[list[dict[str, Any]], list[dict[str, int]]]:
        state = GitHubSandboxState(
            GitHubSandboxConfig(seed=seed, accounts=2), now=ManualClock(START)
        )
        accounts = state.list_accounts()
        return accounts, [state.daily_counts(a["login"]) for a in accounts]

    assert snapshot(7) == snapshot(7)
    assert snapshot(7) != snapshot(8)
