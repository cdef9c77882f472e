"""In-memory state of the GitHub sandbox: users, events, contributions, tokens and limits.

Data model. Every user has an IANA time zone and ~``history_days`` of activity at local
hours. Each activity item is one public event (``PushEvent``, ``PullRequestEvent``,
``IssuesEvent``, ``CreateEvent``, ``WatchEvent``, ``IssueCommentEvent``); it also adds
``contributions`` to the contribution calendar: the commits of a push (1-5), 1 for an
opened pull request, an opened issue or a created repository, 0 for the rest. Commits are
dated at their push.

Calendar days. GitHub documents that "contributions are timestamped according to
Coordinated Universal Time (UTC) rather than your local time zone", so
``contributionCalendar`` buckets contributions by their UTC date, whatever the offset of
``from``/``to``. ``daily_counts(user, "UTC")`` therefore equals the calendar exactly, and
``daily_counts(user)`` (the user's own zone) gives per-local-day counts, which differ.

Events feed. ``/users/{username}/events`` shows events of the last 90 days, newest first,
at most 300, minus those younger than ``event_latency`` (GitHub: "30s to 6h").
"""

from __future__ import annotations

import math
import secrets
from bisect import insort
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sync_pipeline.sandbox.common import (
    FAULT_KINDS,
    AccountSandboxState,
    OAuthIssuer,
    SandboxApiError,
    ScaledConfig,
    WindowCounter,
    check_history,
    optional,
    rng_for,
)
from sync_pipeline.sandbox.github import data
from sync_pipeline.sandbox.github.data import Event, User

ACCESS_TOKEN_SECONDS = 28800
REFRESH_TOKEN_SECONDS = 15_897_600
AUTH_CODE_SECONDS = 600.0
HOUR = 3600.0
MINUTE = 60.0
EVENTS_MAX_AGE = 90 * 86400
EVENTS_MAX = 300
EVENTS_DEFAULT_PER_PAGE = 30
EVENTS_MAX_PER_PAGE = 100
FIRST_EVENT_ID = 40_000_000_000
DOCS = "https://docs.github.com"
RATE_DOCS = f"{DOCS}/rest/overview/rate-limits-for-the-rest-api"
OAUTH_ERROR_DOCS = (
    f"{DOCS}/apps/managing-oauth-apps/troubleshooting-oauth-app-access-token-request-errors"
)
#: FaultBook kinds of this sandbox: the shared ones plus GitHub's secondary rate limit.
GITHUB_FAULT_KINDS = FAULT_KINDS | {"secondary"}
RESOURCES = ("core", "graphql")


class GitHubApiError(SandboxApiError):
    """An HTTP error with GitHub's REST error body ``{"message", "documentation_url"}``."""

    def __init__(
        self,
        status: int,
        message: str,
        documentation_url: str = f"{DOCS}/rest",
        headers: dict[str, str] | None = None,
    ) -> None:
        body = {"message": message, "documentation_url": documentation_url, "status": str(status)}
        super().__init__(status, body, headers)


@dataclass
class GitHubSandboxConfig(ScaledConfig):
    """Settings of one GitHub sandbox; durations are divided by ``time_scale``.

    ``callback_url`` is the GitHub App's registered callback (None: any redirect_uri).
    ``anchor_epoch`` pins "now" for the generated history (default: the clock at creation).
    """

    seed: int = 42
    accounts: int = 5
    history_days: int = 120
    client_id: str = "Iv23liSandbox0000000"
    client_secret: str = "sandbox-github-secret"
    callback_url: str | None = None
    core_limit: int = 5000
    graphql_limit: int = 5000
    unauthenticated_limit: int = 60
    secondary_rest_points_per_minute: int = 900
    secondary_graphql_points_per_minute: int = 2000
    secondary_retry_after: int = 60
    primary_limit_status: int = 403
    rate_limits_enabled: bool = True
    poll_interval: int = 60
    event_latency: float = 0.0
    time_scale: float = 1.0
    first_user_id: int = 5_830_001
    anchor_epoch: float | None = None


class _GitHubIssuer(OAuthIssuer):
    """OAuthIssuer with GitHub's token formats (``ghu_``/``ghr_``, 20-hex-digit codes)."""

    def _new(self, kind: str) -> str:
        if kind == "code":
            return secrets.token_hex(10)
        prefix = {"access": "ghu_", "refresh": "ghr_"}.get(kind, "gh_")
        alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
        return prefix + "".join(secrets.choice(alphabet) for _ in range(36))

    def revoke_token(self, access_token: str) -> bool:
        """Revoke one access token; False when unknown or already revoked."""
        with self._lock:
            token = self._access.get(access_token)
            if token is None or token.revoked:
                return False
            token.revoked = True
            return True


@dataclass
class RefreshMeta:
    """What a live refresh token belongs to and when it dies."""

    principal: str
    expires_at: float
    access_token: str


@dataclass
class Budget:
    """One primary rate-limit bucket as the ``x-ratelimit-*`` headers show it."""

    limit: int
    used: int
    reset: int
    resource: str

    @property
    def remaining(self) -> int:
        """Requests/points left (never negative)."""
        return max(0, self.limit - self.used)

    def headers(self) -> dict[str, str]:
        """``x-ratelimit-limit/remaining/used/reset/resource``."""
        return {
            "x-ratelimit-limit": str(self.limit),
            "x-ratelimit-remaining": str(self.remaining),
            "x-ratelimit-used": str(self.used),
            "x-ratelimit-reset": str(self.reset),
            "x-ratelimit-resource": self.resource,
        }

    def as_dict(self) -> dict[str, int]:
        """``/rate_limit`` form."""
        return {
            "limit": self.limit,
            "used": self.used,
            "remaining": self.remaining,
            "reset": self.reset,
        }


class GitHubSandboxState(AccountSandboxState[GitHubSandboxConfig]):
    """Everything the GitHub sandbox knows; all public methods are thread-safe."""

    namespace = "github"
    config_type = GitHubSandboxConfig
    fault_kinds = GITHUB_FAULT_KINDS

    def setup(self) -> None:
        """Users with their events, the OAuth issuer and the rate budgets."""
        policy = self.token_policy(
            ACCESS_TOKEN_SECONDS, AUTH_CODE_SECONDS, "gh", rotate_refresh=True
        )
        self._issuer = _GitHubIssuer(policy, self.time)
        self._users: dict[int, User] = {}
        self._logins: dict[str, int] = {}
        self._next_event_id = FIRST_EVENT_ID
        self._codes: dict[str, tuple[str, str]] = {}  # code -> (principal, redirect_uri)
        self._refresh: dict[str, RefreshMeta] = {}
        self._connected: set[int] = set()
        self._primary = WindowCounter()
        self._window_starts: dict[str, float] = {}
        self._secondary = WindowCounter()
        for _ in range(self.config.accounts):
            self._create_user(self.config.history_days, None)

    # ------------------------------------------------------------------------- users
    def _create_user(self, days: int, time_zone: str | None) -> User:
        check_history(days, time_zone)
        index = len(self._users)
        user_id = self.config.first_user_id + index
        now = self.anchor if index < self.config.accounts else self.time()
        user = data.make_user(self.config.seed, index, user_id, now, time_zone)
        rng = rng_for(self.config.seed, "github-events", index)
        for ts in data.history(self.config.seed, user, now, days):
            kind = data.pick_kind(rng)
            self._append(user, ts, kind, data.contributions_for(kind, rng), rng.choice(user.repos))
        self._users[user_id] = user
        self._logins[user.login.lower()] = user_id
        return user

    def _append(self, user: User, ts: int, kind: str, contributions: int, repo: data.Repo) -> Event:
        event = Event(self._next_event_id, kind, ts, repo, contributions, user.next_seq)
        self._next_event_id += 1
        user.next_seq += 1
        insort(user.events, event, key=lambda e: (e.created_at, e.id))
        return event

    def user(self, account: str | int) -> User:
        """A user by id or login (case-insensitive); KeyError if unknown."""
        with self._lock:
            text = str(account).strip()
            if text.isdigit() and int(text) in self._users:
                return self._users[int(text)]
            if text.lower() in self._logins:
                return self._users[self._logins[text.lower()]]
            raise KeyError(f"unknown account {account!r}")

    def find_login(self, login: str) -> User | None:
        """The user with this login (case-insensitive), or None."""
        with self._lock:
            user_id = self._logins.get(login.lower())
            return None if user_id is None else self._users[user_id]

    def user_ids(self) -> list[int]:
        """All user ids in creation order."""
        with self._lock:
            return list(self._users)

    def add_account(self, history_days: int | None = None, time_zone: str | None = None) -> User:
        """Create a user with ``history_days`` of activity up to now."""
        with self._lock:
            days = self.config.history_days if history_days is None else history_days
            return self._create_user(days, time_zone)

    def add_items(
        self,
        account: str | int,
        count: int = 1,
        at: float | None = None,
        kind: str = "PushEvent",
        commits: int = 1,
    ) -> list[str]:
        """Add ``count`` events of ``kind`` at ``at`` (default now); returns their ids.

        A push adds ``commits`` contributions; other kinds add what they always do.
        """
        if count < 0:
            raise ValueError("count must be >= 0")
        valid = {k for k, _ in data.EVENT_TYPES}
        if kind not in valid:
            raise ValueError(f"unknown kind {kind!r}; known: {sorted(valid)}")
        if kind == "PushEvent" and commits < 1:
            raise ValueError("commits must be >= 1")
        with self._lock:
            user = self.user(account)
            ts = int(self.time() if at is None else at)
            if kind == "PushEvent":
                contributions = commits
            else:
                contributions = 1 if kind in data.CONTRIBUTING_TYPES else 0
            return [
                str(self._append(user, ts, kind, contributions, user.repos[0]).id)
                for _ in range(count)
            ]

    def list_accounts(self) -> list[dict[str, Any]]:
        """Control view: id, login, time zone, counts, connection."""
        with self._lock:
            out = []
            for user in self._users.values():
                out.append(
                    {
                        "id": user.id,
                        "handle": user.login,
                        "login": user.login,
                        "time_zone": user.time_zone,
                        "events": len(user.events),
                        "visible_events": len(self._feed(user)),
                        "contributions": sum(e.contributions for e in user.events),
                        "connected": user.id in self._connected,
                    }
                )
            return out

    def _feed(self, user: User) -> list[Event]:
        now = self.time()
        newest = now - self.config.scaled(self.config.event_latency)
        oldest = now - EVENTS_MAX_AGE
        visible = [e for e in reversed(user.events) if oldest <= e.created_at <= newest]
        return visible[:EVENTS_MAX]

    def event_ids(self, account: str | int) -> list[str]:
        """Ids of the events the public feed shows now, newest first."""
        with self._lock:
            return [str(e.id) for e in self._feed(self.user(account))]

    def events_page(
        self, account: str | int, page: int, per_page: int, api: str
    ) -> tuple[list[dict[str, Any]], int]:
        """One page of the feed as JSON and the number of pages in all."""
        with self._lock:
            user = self.user(account)
            feed = self._feed(user)
            start = (page - 1) * per_page
            items = [data.event_json(user, e, api) for e in feed[start : start + per_page]]
            return items, max(1, math.ceil(len(feed) / per_page))

    def daily_counts(
        self, account: str | int, tz: str | None = None, unit: str = "contributions"
    ) -> dict[str, int]:
        """Exact per-day counts in ``tz`` (default: the user's zone), days with activity only.

        ``unit="contributions"``: every contribution up to now (the calendar, when
        ``tz="UTC"``). ``unit="events"``: the events the public feed shows now.
        """
        if unit not in ("contributions", "events"):
            raise ValueError("unit must be 'contributions' or 'events'")
        with self._lock:
            user = self.user(account)
            zone = ZoneInfo(tz or user.time_zone)
            now = self.time()
            counts: Counter[str] = Counter()
            if unit == "events":
                for event in self._feed(user):
                    counts[datetime.fromtimestamp(event.created_at, zone).date().isoformat()] += 1
            else:
                for event in user.events:
                    if event.contributions and event.created_at <= now:
                        day = datetime.fromtimestamp(event.created_at, zone).date().isoformat()
                        counts[day] += event.contributions
            return dict(sorted(counts.items()))

    def user_json(self, user: User, api: str) -> dict[str, Any]:
        """``GET /user`` body."""
        with self._lock:
            return data.user_json(user, api, len(user.repos))

    # ------------------------------------------------------------------ contributions
    def contribution_days(
        self, user: User, start: datetime, end: datetime
    ) -> list[tuple[date, int]]:
        """(UTC date, contributions) for every date from ``start`` to ``end``, inclusive."""
        lo, hi = start.timestamp(), end.timestamp()
        with self._lock:
            counts: Counter[date] = Counter()
            for event in user.events:
                if event.contributions and lo <= event.created_at <= hi:
                    counts[datetime.fromtimestamp(event.created_at, UTC).date()] += (
                        event.contributions
                    )
        first, last = start.astimezone(UTC).date(), end.astimezone(UTC).date()
        return [
            (first + timedelta(days=k), counts[first + timedelta(days=k)])
            for k in range((last - first).days + 1)
        ]

    def contribution_totals(self, user: User, start: datetime, end: datetime) -> dict[str, int]:
        """Contributions in the range by kind: commit, issue, pull_request, repository."""
        lo, hi = start.timestamp(), end.timestamp()
        totals = {"commit": 0, "issue": 0, "pull_request": 0, "repository": 0}
        names = {
            "PushEvent": "commit",
            "IssuesEvent": "issue",
            "PullRequestEvent": "pull_request",
            "CreateEvent:repository": "repository",
        }
        with self._lock:
            for event in user.events:
                if event.contributions and lo <= event.created_at <= hi:
                    totals[names[event.kind]] += event.contributions
        return totals

    # ------------------------------------------------------------------------- OAuth
    def check_client(self, client_id: str | None, client_secret: str | None = None) -> bool:
        """Whether the client id (and secret, when given) are this app's."""
        if client_id != self.config.client_id:
            return False
        return client_secret is None or secrets.compare_digest(
            client_secret, self.config.client_secret
        )

    def redirect_allowed(self, redirect_uri: str) -> bool:
        """GitHub accepts the callback URL or a path below it (same scheme, host, port)."""
        callback = self.config.callback_url
        if callback is None:
            return True
        return redirect_uri == callback or redirect_uri.startswith(callback.rstrip("/") + "/")

    def pick_user(self, sandbox_user: str | None) -> User:
        """The account an authorization approves: the named one or the first unconnected."""
        with self._lock:
            if sandbox_user:
                return self.user(sandbox_user)
            if not self._users:
                raise KeyError("the sandbox has no accounts")
            for user in self._users.values():
                if user.id not in self._connected:
                    return user
            return next(iter(self._users.values()))

    def new_code(self, user: User, redirect_uri: str) -> str:
        """An authorization code for ``user``."""
        code = self._issuer.new_code(str(user.id), frozenset(), redirect_uri)
        with self._lock:
            self._codes[code] = (str(user.id), redirect_uri)
        return code

    def principal_for_code(self, code: str | None) -> str | None:
        """User id a code was issued for (fault matching)."""
        with self._lock:
            meta = self._codes.get(code or "")
            return None if meta is None else meta[0]

    def principal_for_refresh(self, refresh_token: str | None) -> str | None:
        """User id of a refresh token (fault matching)."""
        return self.owner_in(self._refresh, refresh_token)

    def principal_for_token(self, access_token: str | None) -> str | None:
        """User id of an access token, even expired or revoked."""
        return self._issuer.principal_of(access_token)

    def _token_body(self, principal: str) -> dict[str, Any]:
        access, refresh = self._issuer.issue(principal, frozenset())
        return self._grant_body(principal, access.value, refresh)

    def _grant_body(self, principal: str, access: str, refresh: str | None) -> dict[str, Any]:
        assert refresh is not None
        refresh_life = self.config.scaled(REFRESH_TOKEN_SECONDS)
        with self._lock:
            self._refresh[refresh] = RefreshMeta(principal, self.time() + refresh_life, access)
            self._connected.add(int(principal))
        return {
            "access_token": access,
            "expires_in": int(self.config.scaled(ACCESS_TOKEN_SECONDS)),
            "refresh_token": refresh,
            "refresh_token_expires_in": int(refresh_life),
            "scope": "",
            "token_type": "bearer",
        }

    @staticmethod
    def oauth_error(error: str, description: str, anchor: str) -> dict[str, Any]:
        """GitHub's token-endpoint error (sent with HTTP 200)."""
        return {
            "error": error,
            "error_description": description,
            "error_uri": f"{OAUTH_ERROR_DOCS}#{anchor}",
        }

    def exchange_code(self, params: dict[str, str]) -> dict[str, Any]:
        """``POST /login/oauth/access_token`` for a code: tokens or an error body."""
        if not self.check_client(params.get("client_id"), params.get("client_secret", "")):
            return self.oauth_error(
                "incorrect_client_credentials",
                "The client_id and/or client_secret passed are incorrect.",
                "incorrect-client-credentials",
            )
        code = params.get("code")
        redirect_uri = params.get("redirect_uri") or None
        with self._lock:
            meta = self._codes.get(code or "")
        if meta is not None and redirect_uri is not None and redirect_uri != meta[1]:
            return self.oauth_error(
                "redirect_uri_mismatch",
                "The redirect_uri MUST match the registered callback URL for this application.",
                "redirect-uri-mismatch2",
            )
        pending = self._issuer.take_code(code)
        if pending is None:
            return self.oauth_error(
                "bad_verification_code",
                "The code passed is incorrect or expired.",
                "bad-verification-code",
            )
        return self._token_body(pending.principal)

    def refresh(self, params: dict[str, str]) -> dict[str, Any]:
        """``POST /login/oauth/access_token`` with ``grant_type=refresh_token``.

        Rotates: the old refresh token and the access token it came with stop working.
        """
        if not self.check_client(params.get("client_id"), params.get("client_secret", "")):
            return self.oauth_error(
                "incorrect_client_credentials",
                "The client_id and/or client_secret passed are incorrect.",
                "incorrect-client-credentials",
            )
        old = params.get("refresh_token") or ""
        bad = self.oauth_error(
            "bad_refresh_token",
            "The refresh token passed is incorrect or expired.",
            "bad-refresh-token",
        )
        with self._lock:
            meta = self._refresh.get(old)
            if meta is None or meta.expires_at <= self.time():
                return bad
            result = self._issuer.refresh(old)
            if result is None:
                return bad
            del self._refresh[old]
            self._issuer.revoke_token(meta.access_token)
            self._counters["refreshes"] += 1
            access, new_refresh = result
            return self._grant_body(meta.principal, access.value, new_refresh)

    def issue_tokens(self, account: str | int) -> dict[str, Any]:
        """Tokens for an account without the browser flow (tests)."""
        user = self.user(account)
        return self._token_body(str(user.id))

    def authenticate(self, access_token: str | None) -> User | None:
        """The user of a live access token, or None (unknown, expired, revoked)."""
        token = self._issuer.authenticate(access_token)
        if token is None:
            return None
        with self._lock:
            return self._users.get(int(token.principal))

    def revoke(self, account: str | int) -> int:
        """Revoke every token of an account (the user removed the app); returns how many."""
        user = self.user(account)
        n = self._issuer.revoke(str(user.id))
        with self._lock:
            for value in [v for v, m in self._refresh.items() if m.principal == str(user.id)]:
                del self._refresh[value]
            self._connected.discard(user.id)
        return n

    def revoke_token(self, access_token: str) -> bool:
        """Revoke one access token (``DELETE /applications/{client_id}/token``)."""
        return self._issuer.revoke_token(access_token)

    def expire(self, account: str | int) -> int:
        """Expire an account's access tokens now (refresh tokens stay valid)."""
        return self._issuer.expire(str(self.user(account).id))

    # --------------------------------------------------------------------- rate limits
    def _limit(self, key: str, resource: str) -> int:
        if key.startswith("ip:"):
            return self.config.unauthenticated_limit
        return self.config.graphql_limit if resource == "graphql" else self.config.core_limit

    def _window_start(self, name: str, now: float) -> float:
        start = self._window_starts.get(name)
        if start is None or now >= start + self.config.scaled(HOUR):
            return now
        return start

    def _budget(self, key: str, resource: str, start: float, used: int) -> Budget:
        reset = math.ceil(start + self.config.scaled(HOUR))
        return Budget(self._limit(key, resource), used, reset, resource)

    def budget(self, key: str, resource: str) -> Budget:
        """Current state of a bucket (``user:<id>`` or ``ip:<address>``) without charging."""
        name = f"{key}:{resource}"
        with self._lock:
            start = self._window_start(name, self.time())
            return self._budget(key, resource, start, self._primary.peek(name, start))

    def charge(self, key: str, resource: str, cost: int = 1) -> tuple[Budget, bool]:
        """Charge the primary limit; (budget after, refused). A refused request costs nothing.

        The hour window starts with the first request after the previous one ended.
        """
        name = f"{key}:{resource}"
        with self._lock:
            start = self._window_start(name, self.time())
            used = self._primary.peek(name, start)
            limit = self._limit(key, resource)
            if self.config.rate_limits_enabled and used + cost > limit:
                self._counters["rate_limited"] += 1
                return self._budget(key, resource, start, used), True
            self._window_starts[name] = start
            used = self._primary.add(name, start, cost)
            return self._budget(key, resource, start, used), False

    def charge_secondary(self, key: str, resource: str, points: int = 1) -> int | None:
        """Charge the points-per-minute secondary limit; seconds to wait when refused."""
        limit = (
            self.config.secondary_graphql_points_per_minute
            if resource == "graphql"
            else self.config.secondary_rest_points_per_minute
        )
        length = self.config.scaled(MINUTE)
        name = f"{key}:{resource}"
        with self._lock:
            now = self.time()
            start = WindowCounter.aligned_start(now, length)
            used = self._secondary.peek(name, start)
            if self.config.rate_limits_enabled and used + points > limit:
                self._counters["secondary_limited"] += 1
                return max(1, math.ceil(start + length - now))
            self._secondary.add(name, start, points)
            return None

    def exhaust(
        self, account: str | int | None = None, resource: str = "core", remaining: int = 0
    ) -> list[dict[str, Any]]:
        """Use up a user's primary budget (all users when ``account`` is None)."""
        if resource not in RESOURCES:
            raise ValueError(f"resource must be one of {RESOURCES}")
        with self._lock:
            users = list(self._users.values()) if account is None else [self.user(account)]
            out = []
            for user in users:
                key = f"user:{user.id}"
                name = f"{key}:{resource}"
                start = self._window_start(name, self.time())
                used = self._primary.peek(name, start)
                target = max(0, self._limit(key, resource) - remaining)
                self._window_starts[name] = start
                if target > used:
                    self._primary.add(name, start, target - used)
                out.append({"id": user.id, **self.budget(key, resource).as_dict()})
            return out

    def reset_usage(self) -> None:
        """Forget all primary and secondary usage."""
        with self._lock:
            self._primary.reset()
            self._secondary.reset()
            self._window_starts.clear()

    # ------------------------------------------------------------------------ control
    def control_add_account(self, body: dict[str, Any]) -> Any:
        """``POST /_sandbox/accounts``: ``history_days`` and ``time_zone``; the account's view."""
        user = self.add_account(optional(body, "history_days", int), body.get("time_zone"))
        return next(a for a in self.list_accounts() if a["id"] == user.id)

    def control_add_items(self, ref: str, body: dict[str, Any]) -> list[str]:
        """New events: ``count``, ``at``, event ``type`` and push ``commits``."""
        kind, commits = str(body.get("type", "PushEvent")), int(body.get("commits", 1))
        count, at = int(body.get("count", 1)), optional(body, "at", float)
        return self.add_items(ref, count, at, kind, commits)

    def control_tokens(self, ref: str, body: dict[str, Any]) -> Any:
        """Tokens for an account."""
        return self.issue_tokens(ref)

    def control_daily_counts(self, ref: str, query: Mapping[str, str]) -> Any:
        """Per-day counts in ``tz`` of ``unit`` (contributions or events)."""
        return self.daily_counts(ref, query.get("tz"), query.get("unit", "contributions"))

    def control_exhaust(self, body: dict[str, Any]) -> Any:
        """Use up a primary budget: ``account``, ``resource`` and ``remaining``."""
        resource, remaining = str(body.get("resource", "core")), int(body.get("remaining", 0))
        return self.exhaust(body.get("account"), resource, remaining)

    # -------------------------------------------------------------------------- stats
    def record_response(self, status: int) -> None:
        """Count a response status (and 304s apart: they cost no rate limit)."""
        super().record_response(status)
        if status == 304:
            self.record("not_modified")

    def count(self, name: str, n: int = 1) -> None:
        """Bump a named counter (``graphql_points``...)."""
        self.record(name, n)

    def stats(self) -> dict[str, Any]:
        """Counters since the last reset plus current budgets of every used bucket."""
        with self._lock:
            usage: dict[str, dict[str, Any]] = {}
            for name in sorted(self._window_starts):
                key, _, resource = name.rpartition(":")
                usage.setdefault(key, {})[resource] = self.budget(key, resource).as_dict()
            return {
                **self.request_stats(),
                "not_modified": self._counters["not_modified"],
                "rate_limited": self._counters["rate_limited"],
                "secondary_limited": self._counters["secondary_limited"],
                "refreshes": self._counters["refreshes"],
                "graphql_points": self._counters["graphql_points"],
                "usage": usage,
            }
