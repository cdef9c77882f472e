"""In-memory state of the YouTube sandbox: channels, uploads, Google tokens and quota.

Data model. Every Google account owns one channel with an IANA time zone and
~``history_days`` of uploads at local hours. All videos are public; in the uploads playlist
``snippet.publishedAt`` equals ``contentDetails.videoPublishedAt`` (no scheduled premieres).
``daily_counts(account, tz)`` counts uploads by their publish time's date in ``tz``.

Quota. 10,000 units per day per project (the OAuth client id); each list call costs 1 unit,
failed ones included, except requests rejected for authentication or for quota. The quota
day starts at midnight America/Los_Angeles (DST-correct through zoneinfo); it is a calendar
day and not compressed by ``time_scale`` (token lifetimes are).
"""

from __future__ import annotations

import math
import secrets
from bisect import insort
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sync_pipeline.sandbox.common import (
    AccountSandboxState,
    IssuedToken,
    OAuthIssuer,
    SandboxApiError,
    ScaledConfig,
    WindowCounter,
    check_history,
    optional,
)
from sync_pipeline.sandbox.youtube import data
from sync_pipeline.sandbox.youtube.data import Channel, Video

ACCESS_TOKEN_SECONDS = 3599
AUTH_CODE_SECONDS = 600.0
MAX_RESULTS = 50
DEFAULT_MAX_RESULTS = 5
SCOPE_PREFIX = "https://www.googleapis.com/auth/"
YOUTUBE_READ_SCOPES = frozenset(
    SCOPE_PREFIX + s for s in ("youtube.readonly", "youtube", "youtube.force-ssl", "youtubepartner")
)
KNOWN_SCOPES = YOUTUBE_READ_SCOPES | {
    SCOPE_PREFIX + "youtube.upload",
    SCOPE_PREFIX + "userinfo.email",
    SCOPE_PREFIX + "userinfo.profile",
    "openid",
    "email",
    "profile",
}


class GoogleApiError(SandboxApiError):
    """An HTTP error with Google's JSON error body (API or OAuth endpoint shape)."""


_STATUS_NAMES = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    409: "ABORTED",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}


def api_error(
    status: int,
    message: str,
    reason: str,
    domain: str = "global",
    location: str | None = None,
    location_type: str | None = None,
    with_status: bool = True,
    detail: str | None = None,
) -> GoogleApiError:
    """Google's API error ``{"error": {"code", "message", "errors": [...], "status"}}``."""
    entry: dict[str, Any] = {"message": detail or message, "domain": domain, "reason": reason}
    if location is not None:
        entry["location"] = location
        entry["locationType"] = location_type or "parameter"
    body: dict[str, Any] = {"code": status, "message": message, "errors": [entry]}
    if with_status and status in _STATUS_NAMES:
        body["status"] = _STATUS_NAMES[status]
    return GoogleApiError(status, {"error": body})


def auth_error() -> GoogleApiError:
    """401 for a missing-in-action, expired, revoked or unknown access token."""
    err = api_error(
        401,
        "Request had invalid authentication credentials. Expected OAuth 2 access token, login"
        " cookie or other valid authentication credential. See"
        " https://developers.google.com/identity/sign-in/web/devconsole-project.",
        "authError",
        location="Authorization",
        location_type="header",
        detail="Invalid Credentials",
    )
    err.headers["www-authenticate"] = (
        'Bearer realm="https://accounts.google.com/", error="invalid_token"'
    )
    return err


def quota_error() -> GoogleApiError:
    """403 ``quotaExceeded`` (no ``status`` field, as YouTube sends it)."""
    message = (
        "The request cannot be completed because you have exceeded your"
        ' <a href="/youtube/v3/getting-started#quota">quota</a>.'
    )
    return api_error(403, message, "quotaExceeded", domain="youtube.quota", with_status=False)


def oauth_error(status: int, error: str, description: str) -> GoogleApiError:
    """An OAuth token-endpoint error ``{"error", "error_description"}``."""
    return GoogleApiError(status, {"error": error, "error_description": description})


@dataclass
class YouTubeSandboxConfig(ScaledConfig):
    """Settings of one YouTube sandbox; token lifetimes are divided by ``time_scale``.

    ``redirect_uris``: the OAuth client's registered redirect URIs (None: accept any).
    ``refresh_token_lifetime``: seconds a refresh token lives (None: until revoked; Google
    gives 7 days to apps in "Testing" publishing status).
    """

    seed: int = 42
    accounts: int = 5
    history_days: int = 120
    client_id: str = "123456789012-sandbox.apps.googleusercontent.com"
    client_secret: str = "GOCSPX-sandbox-secret"
    redirect_uris: tuple[str, ...] | None = None
    daily_quota: int = 10_000
    quota_timezone: str = "America/Los_Angeles"
    rate_limits_enabled: bool = True
    refresh_token_lifetime: float | None = None
    time_scale: float = 1.0
    anchor_epoch: float | None = None


class _GoogleIssuer(OAuthIssuer):
    """OAuthIssuer with Google's token formats and access-only issuance."""

    def _new(self, kind: str) -> str:
        prefix, length = {"access": ("ya29.a0", 120), "refresh": ("1//0", 96)}.get(
            kind, ("4/0A", 70)
        )
        alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
        return prefix + "".join(secrets.choice(alphabet) for _ in range(length))

    def issue_access(self, principal: str, scopes: frozenset[str]) -> IssuedToken:
        """An access token without a refresh token (online access)."""
        with self._lock:
            lifetime = self.policy.access_seconds
            expires = None if lifetime is None else self.clock() + lifetime
            token = IssuedToken(self._new("access"), principal, scopes, expires)
            self._access[token.value] = token
            return token


@dataclass
class CodeMeta:
    """What an authorization code grants once exchanged."""

    principal: str
    redirect_uri: str
    offline: bool
    scopes: frozenset[str]


@dataclass
class RefreshMeta:
    """A refresh token handed out: its account and expiry (None: until revoked)."""

    principal: str
    scopes: frozenset[str]
    expires_at: float | None


def scope_string(scopes: frozenset[str]) -> str:
    """Space-separated scopes in a stable order."""
    return " ".join(sorted(scopes))


class YouTubeSandboxState(AccountSandboxState[YouTubeSandboxConfig]):
    """Everything the YouTube sandbox knows; all public methods are thread-safe."""

    namespace = "youtube"
    config_type = YouTubeSandboxConfig

    def setup(self) -> None:
        """Channels with their uploads, the Google OAuth issuer and the quota."""
        self.quota_zone = ZoneInfo(self.config.quota_timezone)
        policy = self.token_policy(ACCESS_TOKEN_SECONDS, AUTH_CODE_SECONDS, "ya29")
        self._issuer = _GoogleIssuer(policy, self.time)
        self._channels: list[Channel] = []
        self._codes: dict[str, CodeMeta] = {}
        self._refresh: dict[str, RefreshMeta] = {}
        self._quota = WindowCounter()
        for _ in range(self.config.accounts):
            self._create_channel(self.config.history_days, None)

    # --------------------------------------------------------------------- channels
    def _create_channel(self, days: int, time_zone: str | None) -> Channel:
        check_history(days, time_zone)
        index = len(self._channels)
        now = self.anchor if index < self.config.accounts else self.time()
        channel = data.make_channel(self.config.seed, index, now, time_zone)
        for ts in data.history(self.config.seed, channel, now, days):
            self._append(channel, ts)
        self._channels.append(channel)
        return channel

    def _append(self, channel: Channel, ts: int) -> Video:
        seq = channel.next_seq
        channel.next_seq += 1
        seed = self.config.seed
        video = Video(
            data.video_id(seed, channel, seq), ts, data.video_title(seed, channel, seq), seq
        )
        insort(channel.videos, video, key=lambda v: (v.published_at, v.seq))
        return video

    def channel(self, account: str | int) -> Channel:
        """A channel by account id, channel id, uploads playlist id or handle; KeyError."""
        text = str(account).strip()
        with self._lock:
            for ch in self._channels:
                if text in (ch.account_id, ch.channel_id, ch.uploads, ch.handle, ch.handle[1:]):
                    return ch
        raise KeyError(f"unknown account {account!r}")

    def find(self, *, channel_id: str | None = None, handle: str | None = None) -> Channel | None:
        """A channel by id or handle (with or without ``@``), or None."""
        with self._lock:
            for ch in self._channels:
                if channel_id is not None and ch.channel_id == channel_id:
                    return ch
                if handle is not None and ch.handle.lower() == "@" + handle.lower().lstrip("@"):
                    return ch
        return None

    def by_playlist(self, playlist_id: str) -> Channel | None:
        """The channel whose uploads playlist this is, or None."""
        with self._lock:
            return next((ch for ch in self._channels if ch.uploads == playlist_id), None)

    def account_ids(self) -> list[str]:
        """All account ids in creation order."""
        with self._lock:
            return [ch.account_id for ch in self._channels]

    def add_account(self, history_days: int | None = None, time_zone: str | None = None) -> Channel:
        """Create an account (and channel) with ``history_days`` of uploads up to now."""
        with self._lock:
            days = self.config.history_days if history_days is None else history_days
            return self._create_channel(days, time_zone)

    def add_items(self, account: str | int, count: int = 1, at: float | None = None) -> list[str]:
        """Publish ``count`` videos at ``at`` (default now); returns their ids."""
        if count < 0:
            raise ValueError("count must be >= 0")
        with self._lock:
            channel = self.channel(account)
            ts = int(self.time() if at is None else at)
            return [self._append(channel, ts).id for _ in range(count)]

    def list_accounts(self) -> list[dict[str, Any]]:
        """Control view: ids, handle, time zone, counts, connection."""
        with self._lock:
            connected = {m.principal for m in self._refresh.values()}
            return [
                {
                    "id": ch.account_id,
                    "handle": ch.handle,
                    "channel_id": ch.channel_id,
                    "uploads_playlist_id": ch.uploads,
                    "time_zone": ch.time_zone,
                    "videos": len(ch.videos),
                    "connected": ch.account_id in connected,
                }
                for ch in self._channels
            ]

    def video_ids(self, account: str | int) -> list[str]:
        """Video ids of the uploads playlist, newest first (its order)."""
        with self._lock:
            return [v.id for v in reversed(self._published(self.channel(account)))]

    def _published(self, channel: Channel) -> list[Video]:
        now = self.time()
        return [v for v in channel.videos if v.published_at <= now]

    def daily_counts(self, account: str | int, tz: str | None = None) -> dict[str, int]:
        """Exact uploads per day in ``tz`` (default: the account's zone), active days only."""
        with self._lock:
            channel = self.channel(account)
            zone = ZoneInfo(tz or channel.time_zone)
            counts: Counter[str] = Counter(
                datetime.fromtimestamp(v.published_at, zone).date().isoformat()
                for v in self._published(channel)
            )
            return dict(sorted(counts.items()))

    def channel_json(self, channel: Channel, parts: set[str], mine: bool) -> dict[str, Any]:
        """A channel resource."""
        with self._lock:
            return data.channel_json(channel, parts, mine)

    def playlist_page(
        self, channel: Channel, offset: int, limit: int, parts: set[str]
    ) -> tuple[list[dict[str, Any]], int]:
        """Items ``offset..offset+limit`` of the uploads playlist (newest first) and the total."""
        with self._lock:
            videos = list(reversed(self._published(channel)))
            page = videos[offset : offset + limit]
            items = [
                data.playlist_item_json(channel, v, offset + k, parts) for k, v in enumerate(page)
            ]
            return items, len(videos)

    # ------------------------------------------------------------------------- OAuth
    def check_client(self, client_id: str | None) -> bool:
        """Whether ``client_id`` is this project's OAuth client."""
        return client_id == self.config.client_id

    def check_secret(self, client_secret: str | None) -> bool:
        """Whether the secret is the client's."""
        return secrets.compare_digest(client_secret or "", self.config.client_secret)

    def redirect_allowed(self, redirect_uri: str) -> bool:
        """Exact match against the registered URIs (any when none are configured)."""
        uris = self.config.redirect_uris
        return uris is None or redirect_uri in uris

    def pick_channel(self, sandbox_user: str | None) -> Channel:
        """The account an authorization approves: the named one or the first unconnected."""
        with self._lock:
            if sandbox_user:
                return self.channel(sandbox_user)
            if not self._channels:
                raise KeyError("the sandbox has no accounts")
            connected = {m.principal for m in self._refresh.values()}
            for ch in self._channels:
                if ch.account_id not in connected:
                    return ch
            return self._channels[0]

    def new_code(
        self,
        channel: Channel,
        redirect_uri: str,
        scopes: frozenset[str],
        offline: bool,
        consent: bool,
    ) -> str:
        """An authorization code; it yields a refresh token only with offline access, and
        (as Google does) only on first consent unless ``prompt=consent`` asked again."""
        code = self._issuer.new_code(channel.account_id, scopes, redirect_uri)
        with self._lock:
            has_grant = any(m.principal == channel.account_id for m in self._refresh.values())
            self._codes[code] = CodeMeta(
                channel.account_id, redirect_uri, offline and (consent or not has_grant), scopes
            )
        return code

    def principal_for_code(self, code: str | None) -> str | None:
        """Account id a code was issued for (fault matching)."""
        return self.owner_in(self._codes, code)

    def principal_for_refresh(self, refresh_token: str | None) -> str | None:
        """Account id of a refresh token (fault matching)."""
        return self.owner_in(self._refresh, refresh_token)

    def principal_for_token(self, access_token: str | None) -> str | None:
        """Account id of an access token, even expired or revoked."""
        return self._issuer.principal_of(access_token)

    def _check_client_credentials(self, client_id: str | None, client_secret: str | None) -> None:
        if not self.check_client(client_id):
            raise oauth_error(401, "invalid_client", "The OAuth client was not found.")
        if not self.check_secret(client_secret):
            raise oauth_error(401, "invalid_client", "Unauthorized")

    def _grant(self, principal: str, scopes: frozenset[str], offline: bool) -> dict[str, Any]:
        body: dict[str, Any]
        if offline:
            access, refresh = self._issuer.issue(principal, scopes)
            assert refresh is not None
            lifetime = self.config.refresh_token_lifetime
            with self._lock:
                expires = None if lifetime is None else self.time() + self.config.scaled(lifetime)
                self._refresh[refresh] = RefreshMeta(principal, scopes, expires)
            body = {
                "access_token": access.value,
                "expires_in": int(self.config.scaled(ACCESS_TOKEN_SECONDS)),
                "refresh_token": refresh,
            }
            if lifetime is not None:
                body["refresh_token_expires_in"] = int(self.config.scaled(lifetime))
        else:
            token = self._issuer.issue_access(principal, scopes)
            body = {
                "access_token": token.value,
                "expires_in": int(self.config.scaled(ACCESS_TOKEN_SECONDS)),
            }
        body.update({"scope": scope_string(scopes), "token_type": "Bearer"})
        return body

    def exchange_code(self, params: dict[str, str]) -> dict[str, Any]:
        """``POST /token`` with ``grant_type=authorization_code``; GoogleApiError on failure."""
        self._check_client_credentials(params.get("client_id"), params.get("client_secret"))
        code = params.get("code")
        if not code:
            raise oauth_error(400, "invalid_request", "Missing required parameter: code")
        redirect_uri = params.get("redirect_uri")
        if not redirect_uri:
            raise oauth_error(400, "invalid_request", "Missing parameter: redirect_uri")
        with self._lock:
            meta = self._codes.get(code)
        if meta is not None and redirect_uri != meta.redirect_uri:
            raise oauth_error(400, "redirect_uri_mismatch", "Bad Request")
        pending = self._issuer.take_code(code, redirect_uri)
        if pending is None or meta is None:
            raise oauth_error(400, "invalid_grant", "Bad Request")
        return self._grant(meta.principal, meta.scopes, meta.offline)

    def refresh(self, params: dict[str, str]) -> dict[str, Any]:
        """``POST /token`` with ``grant_type=refresh_token``: a new access token only.

        Google does not rotate refresh tokens: the same one keeps working until revoked.
        """
        self._check_client_credentials(params.get("client_id"), params.get("client_secret"))
        value = params.get("refresh_token")
        if not value:
            raise oauth_error(400, "invalid_request", "Missing required parameter: refresh_token")
        invalid = oauth_error(400, "invalid_grant", "Token has been expired or revoked.")
        with self._lock:
            meta = self._refresh.get(value)
            if meta is None:
                raise invalid
            if meta.expires_at is not None and meta.expires_at <= self.time():
                raise invalid
            result = self._issuer.refresh(value)
            if result is None:
                raise invalid
            self._counters["refreshes"] += 1
            access, _ = result
            return {
                "access_token": access.value,
                "expires_in": int(self.config.scaled(ACCESS_TOKEN_SECONDS)),
                "scope": scope_string(meta.scopes),
                "token_type": "Bearer",
            }

    def issue_tokens(self, account: str | int, scope: str | None = None) -> dict[str, Any]:
        """Offline tokens for an account without the browser flow (tests)."""
        channel = self.channel(account)
        scopes = frozenset((scope or SCOPE_PREFIX + "youtube.readonly").split())
        return self._grant(channel.account_id, scopes, offline=True)

    def authenticate(self, access_token: str | None) -> tuple[Channel, frozenset[str]] | None:
        """The channel and scopes of a live access token, or None."""
        token = self._issuer.authenticate(access_token)
        if token is None:
            return None
        return self.channel(token.principal), token.scopes

    def revoke(self, account: str | int) -> int:
        """Revoke every token of an account (as the user removing access); returns how many."""
        principal = self.channel(account).account_id
        n = self._issuer.revoke(principal)
        with self._lock:
            for value in [v for v, m in self._refresh.items() if m.principal == principal]:
                del self._refresh[value]
        return n

    def revoke_token(self, token: str) -> bool:
        """``POST /revoke``: revoking either token of a grant ends the whole grant."""
        principal = self.principal_for_refresh(token) or self.principal_for_token(token)
        if principal is None:
            return False
        self.revoke(principal)
        return True

    def expire(self, account: str | int) -> int:
        """Expire an account's access tokens now (refresh tokens stay valid)."""
        return self._issuer.expire(self.channel(account).account_id)

    # ------------------------------------------------------------------------- quota
    def quota_day(self, now: float | None = None) -> tuple[float, float]:
        """(start, end) epoch seconds of the quota day containing ``now`` (Pacific midnights)."""
        moment = datetime.fromtimestamp(self.time() if now is None else now, self.quota_zone)
        start = datetime(moment.year, moment.month, moment.day, tzinfo=self.quota_zone)
        following = start.date() + timedelta(days=1)
        end = datetime(following.year, following.month, following.day, tzinfo=self.quota_zone)
        return start.timestamp(), end.timestamp()

    def charge_quota(self, cost: int = 1) -> bool:
        """Charge the project's daily quota; False (and nothing charged) when it is used up."""
        name = f"project:{self.config.client_id}"
        with self._lock:
            start, _ = self.quota_day()
            used = self._quota.peek(name, start)
            if self.config.rate_limits_enabled and used + cost > self.config.daily_quota:
                self._counters["quota_exceeded"] += 1
                return False
            self._quota.add(name, start, cost)
            return True

    def quota(self) -> dict[str, Any]:
        """Units used today, what is left and when the day resets."""
        name = f"project:{self.config.client_id}"
        with self._lock:
            start, end = self.quota_day()
            used = self._quota.peek(name, start)
            return {
                "daily_quota": self.config.daily_quota,
                "used_today": used,
                "remaining": max(0, self.config.daily_quota - used),
                "day_start": start,
                "next_reset": end,
                "next_reset_iso": data.iso(end),
                "seconds_to_reset": math.ceil(end - self.time()),
            }

    def exhaust(self, remaining: int = 0) -> dict[str, Any]:
        """Use up today's quota, leaving ``remaining`` units."""
        name = f"project:{self.config.client_id}"
        with self._lock:
            start, _ = self.quota_day()
            used = self._quota.peek(name, start)
            target = max(0, self.config.daily_quota - remaining)
            if target > used:
                self._quota.add(name, start, target - used)
            return self.quota()

    # ------------------------------------------------------------------------ control
    def control_add_account(self, body: dict[str, Any]) -> Any:
        """``POST /_sandbox/accounts``: ``history_days`` and ``time_zone``; the account's view."""
        channel = self.add_account(optional(body, "history_days", int), body.get("time_zone"))
        return next(a for a in self.list_accounts() if a["id"] == channel.account_id)

    def control_add_items(self, ref: str, body: dict[str, Any]) -> list[str]:
        """New uploads: ``count`` of them, at ``at`` or now."""
        return self.add_items(ref, int(body.get("count", 1)), optional(body, "at", float))

    def control_tokens(self, ref: str, body: dict[str, Any]) -> Any:
        """Tokens for an account with ``scope`` (default: read-only YouTube)."""
        return self.issue_tokens(ref, body.get("scope"))

    def control_daily_counts(self, ref: str, query: Mapping[str, str]) -> Any:
        """Uploads per day in ``tz``."""
        return self.daily_counts(ref, query.get("tz"))

    def control_exhaust(self, body: dict[str, Any]) -> Any:
        """Use up today's quota down to ``remaining`` units."""
        return self.exhaust(int(body.get("remaining", 0)))

    def reset_usage(self) -> None:
        """Forget all quota usage."""
        with self._lock:
            self._quota.reset()

    # ------------------------------------------------------------------------- stats
    def stats(self) -> dict[str, Any]:
        """Counters since the last reset plus today's quota."""
        with self._lock:
            return {
                **self.request_stats(),
                "quota_exceeded": self._counters["quota_exceeded"],
                "refreshes": self._counters["refreshes"],
                "quota": self.quota(),
            }
