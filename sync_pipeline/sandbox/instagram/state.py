"""In-memory state of the Instagram sandbox (Instagram API with Instagram Login).

Behaviour follows Meta's documentation: Business Login authorization codes (valid 1 h, single
use), short-lived user tokens (1 h) exchanged for long-lived ones (60 days) with
``ig_exchange_token``, refreshed with ``ig_refresh_token`` once at least 24 h old and not
expired (there are no refresh tokens), Graph-style errors (``OAuthException`` code 190 for
token problems, 100 for bad parameters), cursor paging of ``/{ig-user-id}/media`` newest first,
and Business Use Case rate limiting per app-user pair over a rolling window reported in
``X-Business-Use-Case-Usage``. Durations are divided by ``time_scale``.
"""

from __future__ import annotations

import base64
import hmac
import json
import math
import secrets
from bisect import insort
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from urllib.parse import urlencode
from zoneinfo import ZoneInfo

from sync_pipeline.sandbox.common import (
    AccountIndex,
    HistoryAccountSandboxState,
    IssuedToken,
    OAuthIssuer,
    RateDecision,
    SandboxApiError,
    ScaledConfig,
)
from sync_pipeline.sandbox.x import history

SHORT_TOKEN_SECONDS = 3600.0
LONG_TOKEN_SECONDS = 60 * 86400.0
REFRESH_MIN_AGE_SECONDS = 86400.0
AUTH_CODE_SECONDS = 3600.0
KNOWN_SCOPES = frozenset((
    "instagram_business_basic", "instagram_business_content_publish",
    "instagram_business_manage_messages", "instagram_business_manage_comments",
    "instagram_business_manage_insights",
))  # fmt: skip
BASIC_SCOPE = "instagram_business_basic"
USER_FIELDS = (
    "id", "user_id", "username", "name", "account_type", "profile_picture_url", "followers_count",
    "follows_count", "media_count",
)  # fmt: skip
MEDIA_FIELDS = (
    "id", "alt_text", "caption", "children", "comments_count", "is_comment_enabled",
    "is_shared_to_feed", "like_count", "media_product_type", "media_type", "media_url", "owner",
    "permalink", "shortcode", "thumbnail_url", "timestamp", "username",
)  # fmt: skip
MEDIA_TYPES = ("IMAGE", "CAROUSEL_ALBUM", "VIDEO")
CAPTION_WORDS = (
    "sunset", "coffee", "weekend", "studio", "launch", "behind the scenes", "new drop", "team",
    "city lights", "morning run", "throwback", "recipe", "travel", "workshop", "details",
)  # fmt: skip
BUC_MESSAGE = (
    "(#80002) There have been too many calls to this Instagram account. Wait a bit and try "
    "again. For more info, please refer to "
    "https://developers.facebook.com/docs/graph-api/overview/rate-limiting."
)
PACIFIC = ZoneInfo("America/Los_Angeles")


def fbtrace_id() -> str:
    """A Graph-style trace id."""
    return "A" + secrets.token_urlsafe(15)


class GraphError(SandboxApiError):
    """An HTTP error with a JSON body (Graph ``{"error": ...}`` or the OAuth host's shape)."""


def graph_error(
    message: str,
    code: int,
    subcode: int | None = None,
    error_type: str = "OAuthException",
    status: int = 400,
    is_transient: bool | None = None,
) -> GraphError:
    """A Graph API error: ``{"error": {message, type, code, error_subcode?, fbtrace_id}}``."""
    error: dict[str, Any] = {"message": message, "type": error_type}
    if is_transient is not None:
        error["is_transient"] = is_transient
    error["code"] = code
    if subcode is not None:
        error["error_subcode"] = subcode
    error["fbtrace_id"] = fbtrace_id()
    headers = {}
    if code == 190:
        headers["WWW-Authenticate"] = f'OAuth "Facebook Platform" "invalid_token" "{message}"'
    return GraphError(status, {"error": error}, headers)


def oauth_host_error(message: str) -> GraphError:
    """Error of ``api.instagram.com/oauth/*``: ``{"error_type", "code": 400, "error_message"}``."""
    return GraphError(400, {"error_type": "OAuthException", "code": 400, "error_message": message})


def bad_param(message: str) -> GraphError:
    """Graph code 100 (invalid parameter)."""
    return graph_error(f"(#100) {message}", 100)


def unsupported_get(node: str) -> GraphError:
    """Graph's answer for an unknown node or one the token may not read."""
    return graph_error(
        f"Unsupported get request. Object with ID '{node}' does not exist, cannot be loaded due "
        "to missing permissions, or does not support this operation. Please read the Graph API "
        "documentation at https://developers.facebook.com/docs/graph-api",
        100,
        33,
        error_type="GraphMethodException",
    )


def _pacific(ts: float) -> str:
    return datetime.fromtimestamp(ts, PACIFIC).strftime("%A, %d-%b-%y %H:%M:%S %Z")


def encode_cursor(media: Media) -> str:
    """Opaque paging cursor of a media object."""
    raw = f"{media.ts}:{media.id}".encode()
    return base64.urlsafe_b64encode(b"QVFI" + raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[int, int]:
    """``(ts, id)`` of a cursor; Graph code 100 when it is not one of ours."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        if not raw.startswith(b"QVFI"):
            raise ValueError(cursor)
        ts, _, media_id = raw[4:].decode().partition(":")
        return int(ts), int(media_id)
    except (ValueError, UnicodeDecodeError):
        raise bad_param("Invalid cursor") from None


@dataclass(frozen=True)
class Media:
    """A stored media object; the rest of its fields are generated from its id."""

    id: int
    owner_id: str
    ts: int
    media_type: str
    product_type: str

    @property
    def key(self) -> tuple[int, int]:
        """Sort key (time, id): newest-first paging walks it backwards."""
        return (self.ts, self.id)


@dataclass
class IgAccount:
    """A sandbox Instagram professional account with media in ascending time order."""

    index: int
    id: str
    username: str
    name: str
    tz: str
    account_type: str
    media: list[Media] = field(default_factory=list)

    def control_view(self) -> dict[str, Any]:
        """JSON form for ``GET /_sandbox/accounts``."""
        return {
            "id": self.id,
            "handle": self.username,
            "username": self.username,
            "name": self.name,
            "time_zone": self.tz,
            "account_type": self.account_type,
            "media_count": len(self.media),
            "item_count": len(self.media),
        }


@dataclass
class TokenInfo:
    """What the sandbox remembers about an issued token (to choose the right 190 subcode)."""

    principal: str
    kind: str  # "short" or "long"
    issued_at: float
    expires_at: float
    revoked: bool = False


@dataclass
class CodeInfo:
    """An authorization code's owner and redirect URI (for precise error messages)."""

    principal: str
    redirect_uri: str
    used: bool = False


@dataclass
class InstagramSandboxConfig(ScaledConfig):
    """Settings of one Instagram sandbox; durations are divided by ``time_scale``.

    ``media_counts`` maps account indexes (0-based) to exact media counts. Business Use Case
    limiting allows ``buc_call_limit`` calls per app-user pair in any rolling
    ``buc_window_seconds`` (Meta's real budget is 4800 x impressions per 24 h; this is a fixed
    stand-in). ``token_response_shape`` picks the code-exchange body: ``"data"`` (current docs:
    ``{"data": [{access_token, user_id, permissions}]}``) or ``"flat"`` (older shape).
    """

    seed: int = 11
    accounts: int = 3
    client_id: str = "990602627938098"
    client_secret: str = "ig-sandbox-secret"
    redirect_uris: tuple[str, ...] = ()  # empty: any redirect URI is accepted
    history_days: int = 120
    media_per_active_day: float = 1.3
    media_counts: dict[int, int] | None = None
    anchor_epoch: float | None = None
    time_scale: float = 1.0
    rate_limits_enabled: bool = True
    buc_call_limit: int = 200
    buc_window_seconds: float = 3600.0
    throttle_http_status: int = 400
    short_token_seconds: float = SHORT_TOKEN_SECONDS
    long_token_seconds: float = LONG_TOKEN_SECONDS
    refresh_min_age_seconds: float = REFRESH_MIN_AGE_SECONDS
    auth_code_seconds: float = AUTH_CODE_SECONDS
    token_response_shape: str = "data"
    default_page_size: int = 25
    max_page_size: int = 100
    max_reachable_media: int = 10_000


class InstagramSandboxState(HistoryAccountSandboxState[InstagramSandboxConfig]):
    """Everything the Instagram sandbox knows; all public methods are thread-safe."""

    namespace = "instagram"
    config_type = InstagramSandboxConfig

    def setup(self) -> None:
        """Accounts with their media, the OAuth issuer and the usage windows."""
        c = self.config
        if c.token_response_shape not in ("data", "flat"):
            raise ValueError("token_response_shape must be 'data' or 'flat'")
        policy = self.token_policy(
            c.short_token_seconds, c.auth_code_seconds, "IGAA", issues_refresh=False
        )
        self.issuer = OAuthIssuer(policy, self.time)
        self._accounts: AccountIndex[IgAccount] = AccountIndex()
        self._media: dict[int, Media] = {}
        self._seq = 0
        self._connected: set[str] = set()
        self._tokens: dict[str, TokenInfo] = {}
        self._codes: dict[str, CodeInfo] = {}
        self._calls: dict[str, deque[float]] = {}
        explicit = c.media_counts or {}
        for index in range(c.accounts):
            self._create_account(index, c.history_days, explicit.get(index))

    # ----------------------------------------------------------------- data
    def _create_account(
        self, index: int, days: int, count: int | None, tz: str | None = None
    ) -> IgAccount:
        rng = self.rng("account", index)
        account_id = str(17_841_400_000_000_000 + index * 1_000_003 + rng.randrange(1_000_000))
        username = history.pick_handle(rng).replace("_", ".")
        while self._accounts.has_username(username):
            username = history.pick_handle(rng).replace("_", ".")
        zone = tz or history.pick_timezone(rng, index + 2)
        profile = history.pick_profile(rng, self.config.media_per_active_day)
        kind = rng.choice(("BUSINESS", "MEDIA_CREATOR"))
        account = IgAccount(index, account_id, username, history.pick_name(rng), zone, kind)
        stamps = history.generate_history(
            self.rng("history", index), zone, self.anchor, days, profile, count
        )
        for ts in stamps:
            account.media.append(self._new_media(account, ts))
        account.media.sort(key=lambda m: m.key)
        return self._accounts.add(account_id, username, account)

    def _new_media(self, account: IgAccount, ts: int) -> Media:
        self._seq += 1
        rng = self.rng("media", account.id, ts, self._seq)
        media_id = 17_900_000_000_000_000 + self._seq * 1_000 + rng.randrange(1_000)
        media_type = rng.choices(MEDIA_TYPES, weights=(6, 2, 2))[0]
        product = "REELS" if media_type == "VIDEO" and rng.random() < 0.8 else "FEED"
        media = Media(media_id, account.id, ts, media_type, product)
        self._media[media_id] = media
        return media

    def account(self, ref: str | int) -> IgAccount:
        """An account by id or username (case-insensitive); KeyError when unknown."""
        with self._lock:
            return self._accounts.find(ref)

    def account_ids(self) -> list[str]:
        """All account ids in creation order."""
        with self._lock:
            return list(self._accounts)

    def list_accounts(self) -> list[dict[str, Any]]:
        """Control view of every account, with its current call usage."""
        with self._lock:
            now = self.time()
            return [
                {
                    **a.control_view(),
                    "connected": a.id in self._connected,
                    "buc_calls_in_window": self._window_calls(a.id, now),
                }
                for a in self._accounts.values()
            ]

    def add_account(
        self, history_days: int | None = None, count: int | None = None, tz: str | None = None
    ) -> dict[str, Any]:
        """Create one more account (history over ``history_days``, or exactly ``count`` media)."""
        if tz is not None:
            history.local_date(0, tz)  # validates the zone name
        with self._lock:
            days = self.config.history_days if history_days is None else int(history_days)
            return self._create_account(len(self._accounts), days, count, tz).control_view()

    def add_items(self, ref: str | int, count: int = 1, at: float | None = None) -> list[str]:
        """Publish ``count`` media one second apart, ending now (or starting at ``at``)."""
        if count < 1:
            raise ValueError("count must be >= 1")
        with self._lock:
            account = self.account(ref)
            now = self.time()
            start = int(now) - (count - 1) if at is None else int(at)
            if start + count - 1 > now:
                raise ValueError("media cannot be dated in the future")
            added = []
            for k in range(count):
                media = self._new_media(account, start + k)
                insort(account.media, media, key=lambda m: m.key)
                added.append(str(media.id))
            return added

    def item_times(self, ref: str | int, reachable_only: bool = True) -> list[float]:
        """Publication times of an account's media, oldest first."""
        with self._lock:
            media = self.account(ref).media
            if reachable_only:
                media = media[-self.config.max_reachable_media :]
            return [float(m.ts) for m in media]

    def daily_counts(
        self, ref: str | int, tz: str | None = None, reachable_only: bool = True
    ) -> dict[str, int]:
        """Exact media per local day (ISO date -> count) in ``tz`` (default: the account's)."""
        account = self.account(ref)
        return history.daily_counts(self.item_times(ref, reachable_only), tz or account.tz)

    # ------------------------------------------------------------ Graph reads
    def user_node(self, account: IgAccount, fields: list[str]) -> dict[str, Any]:
        """IG user node with the requested fields (``id`` always)."""
        rng = self.rng("profile", account.id)
        values: dict[str, Any] = {
            "id": account.id,
            "user_id": account.id,
            "username": account.username,
            "name": account.name,
            "account_type": account.account_type,
            "profile_picture_url": (
                f"https://scontent.cdninstagram.com/v/t51.2885-19/{account.id}_n.jpg"
            ),
            "followers_count": rng.randint(50, 250_000),
            "follows_count": rng.randint(10, 1_500),
            "media_count": len(account.media),
        }
        return _select(values, fields, "User")

    def media_node(self, media: Media, fields: list[str]) -> dict[str, Any]:
        """IG media node with the requested fields (``id`` always)."""
        account = self._accounts[media.owner_id]
        rng = self.rng("media-fields", media.id)
        shortcode = "".join(
            rng.choice("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-")
            for _ in range(11)
        )
        ext = "mp4" if media.media_type == "VIDEO" else "jpg"
        words = ", ".join(rng.sample(CAPTION_WORDS, 2))
        values: dict[str, Any] = {
            "id": str(media.id),
            "alt_text": f"Photo of {words}",
            "caption": f"{words.capitalize()} #{account.username.split('.')[0]}",
            "comments_count": rng.randint(0, 80),
            "is_comment_enabled": True,
            "is_shared_to_feed": True,
            "like_count": rng.randint(0, 3_000),
            "media_product_type": media.product_type,
            "media_type": media.media_type,
            "media_url": f"https://scontent.cdninstagram.com/v/t51.29350-15/{media.id}_n.{ext}",
            "owner": {"id": account.id},
            "permalink": f"https://www.instagram.com/p/{shortcode}/",
            "shortcode": shortcode,
            "timestamp": datetime.fromtimestamp(media.ts, ZoneInfo("UTC")).strftime(
                "%Y-%m-%dT%H:%M:%S+0000"
            ),
            "username": account.username,
        }
        if media.media_type == "VIDEO":
            values["thumbnail_url"] = (
                f"https://scontent.cdninstagram.com/v/t51.29350-15/{media.id}_thumb.jpg"
            )
        if media.media_type == "CAROUSEL_ALBUM":
            values["children"] = {
                "data": [{"id": str(media.id + k)} for k in range(1, rng.randint(2, 5) + 1)]
            }
        return _select(values, fields, "Media")

    def node(self, token: IssuedToken, node: str, params: dict[str, str]) -> dict[str, Any]:
        """``GET /me`` or ``GET /{id}`` (the token's user, or one of its media)."""
        require_basic(token)
        fields = parse_fields(params.get("fields"))
        with self._lock:
            account = self._accounts[token.principal]
            if node in ("me", account.id):
                return self.user_node(account, fields)
            media = self._media.get(int(node)) if node.isdigit() else None
            if media is None or media.owner_id != account.id:
                raise unsupported_get(node)
            return self.media_node(media, fields)

    def media_edge(
        self, token: IssuedToken, node: str, params: dict[str, str], base_url: str
    ) -> dict[str, Any]:
        """``GET /{ig-user-id}/media``: cursor paging newest first, ``since``/``until`` filters.

        ``since`` is inclusive and ``until`` exclusive (unix seconds). ``next``/``previous``
        are absolute URLs built from ``base_url`` (the request URL without its query).
        """
        require_basic(token)
        fields = parse_fields(params.get("fields"))
        limit = self._limit(params.get("limit"))
        since = _timestamp_param(params, "since")
        until = _timestamp_param(params, "until")
        after = decode_cursor(params["after"]) if params.get("after") else None
        before = decode_cursor(params["before"]) if params.get("before") else None
        with self._lock:
            account = self._accounts[token.principal]
            if node not in ("me", account.id):
                raise unsupported_get(node)
            reachable = account.media[-self.config.max_reachable_media :]
            rows = [
                m
                for m in reversed(reachable)
                if (since is None or m.ts >= since) and (until is None or m.ts < until)
            ]
            if after is not None:
                chosen = [m for m in rows if m.key < after][:limit]
            elif before is not None:
                chosen = [m for m in rows if m.key > before][-limit:]
            else:
                chosen = rows[:limit]
            body: dict[str, Any] = {"data": [self.media_node(m, fields) for m in chosen]}
            if not chosen:
                return body
            first, last = encode_cursor(chosen[0]), encode_cursor(chosen[-1])
            paging: dict[str, Any] = {"cursors": {"before": first, "after": last}}
            base = {k: v for k, v in params.items() if k not in ("after", "before")}
            base["limit"] = str(limit)
            if rows[-1].key < chosen[-1].key:
                paging["next"] = f"{base_url}?{_query({**base, 'after': last})}"
            if rows[0].key > chosen[0].key:
                paging["previous"] = f"{base_url}?{_query({**base, 'before': first})}"
            body["paging"] = paging
            return body

    def _limit(self, raw: str | None) -> int:
        if raw is None or raw == "":
            return self.config.default_page_size
        try:
            value = int(raw)
        except ValueError:
            raise bad_param("Param limit must be a number") from None
        if value < 1:
            raise bad_param("Param limit must be a positive number")
        return min(value, self.config.max_page_size)

    # ------------------------------------------------------------------ OAuth
    def resolve_user(self, ref: str | None) -> str:
        """Account chosen by ``sandbox_user`` (id or username), or the next unconnected one."""
        with self._lock:
            return self.account(ref).id if ref else self._accounts.first_not_in(self._connected)

    def check_app(self, client_id: str | None) -> None:
        """The OAuth host's error for an unknown app id."""
        if client_id != self.config.client_id:
            raise oauth_host_error("Invalid platform app")

    def redirect_allowed(self, redirect_uri: str) -> bool:
        """Whether the redirect URI is registered (any when none are configured)."""
        return not self.config.redirect_uris or redirect_uri in self.config.redirect_uris

    def new_code(self, principal: str, scopes: frozenset[str], redirect_uri: str) -> str:
        """An authorization code for ``principal``."""
        code = self.issuer.new_code(principal, scopes, redirect_uri)
        with self._lock:
            self._codes[code] = CodeInfo(principal, redirect_uri)
        return code

    def exchange_code(self, params: dict[str, str]) -> dict[str, Any]:
        """``POST /oauth/access_token``: a short-lived token (1 h) for a code."""
        for name in ("client_id", "client_secret", "grant_type", "redirect_uri", "code"):
            if not params.get(name):
                raise oauth_host_error(f"Missing required field {name}")
        self.check_app(params["client_id"])
        if not hmac.compare_digest(params["client_secret"], self.config.client_secret):
            raise oauth_host_error("Error validating client secret.")
        if params["grant_type"] != "authorization_code":
            raise oauth_host_error("Invalid grant_type")
        code = params["code"].removesuffix("#_")
        with self._lock:
            info = self._codes.get(code)
            if info is None:
                raise oauth_host_error("Invalid authorization code")
            if info.used:
                raise oauth_host_error("This authorization code has been used")
            if info.redirect_uri != params["redirect_uri"]:
                raise oauth_host_error(
                    "Error validating verification code. Please make sure your redirect_uri is "
                    "identical to the one you used in the OAuth dialog request"
                )
            pending = self.issuer.take_code(code, params["redirect_uri"])
            if pending is None:
                raise oauth_host_error("This authorization code has expired")
            info.used = True
            access = self._issue(pending.principal, pending.scopes, "short")
            self._connected.add(pending.principal)
            self._counters["code_exchanges"] += 1
        permissions = sorted(pending.scopes)
        if self.config.token_response_shape == "flat":
            return {
                "access_token": access.value,
                "user_id": int(pending.principal),
                "permissions": permissions,
            }
        return {
            "data": [
                {
                    "access_token": access.value,
                    "user_id": pending.principal,
                    "permissions": ",".join(permissions),
                }
            ]
        }

    def _issue(self, principal: str, scopes: frozenset[str], kind: str) -> IssuedToken:
        access, _ = self.issuer.issue(principal, scopes)
        if kind == "long":
            extended = self.issuer.extend(
                access.value, self.config.scaled(self.config.long_token_seconds)
            )
            assert extended is not None
            access = extended
        assert access.expires_at is not None
        with self._lock:
            now = self.time()
            self._tokens[access.value] = TokenInfo(principal, kind, now, access.expires_at)
        return access

    def exchange_long_lived(self, params: dict[str, str]) -> dict[str, Any]:
        """``GET /access_token?grant_type=ig_exchange_token``: 60-day token for a 1-hour one."""
        if params.get("grant_type") != "ig_exchange_token":
            raise bad_param("Invalid grant_type: must be ig_exchange_token")
        if not params.get("client_secret"):
            raise bad_param("Missing client_secret")
        if not hmac.compare_digest(params["client_secret"], self.config.client_secret):
            raise graph_error("Error validating client secret.", 1)
        value = params.get("access_token")
        old = self.authenticate(value)
        with self._lock:
            info = self._tokens.get(old.value)
            if info is None or info.kind != "short":
                raise bad_param("The access token provided is not a short-lived token")
            token = self.issuer.extend(
                old.value, self.config.scaled(self.config.long_token_seconds)
            )
            assert token is not None and token.expires_at is not None
            self._tokens[token.value] = TokenInfo(
                old.principal, "long", self.time(), token.expires_at
            )
            self._counters["long_lived_exchanges"] += 1
            return self._long_lived_body(token)

    def refresh_long_lived(self, params: dict[str, str]) -> dict[str, Any]:
        """``GET /refresh_access_token?grant_type=ig_refresh_token``: a new 60-day token.

        Allowed for long-lived tokens that are at least 24 hours old and not expired.
        """
        if params.get("grant_type") != "ig_refresh_token":
            raise bad_param("Invalid grant_type: must be ig_refresh_token")
        old = self.authenticate(params.get("access_token"))
        with self._lock:
            info = self._tokens.get(old.value)
            if info is None or info.kind != "long":
                raise bad_param("Only long-lived access tokens can be refreshed")
            min_age = self.config.scaled(self.config.refresh_min_age_seconds)
            if self.time() - info.issued_at < min_age:
                raise bad_param("Long-lived access tokens can be refreshed only after 24 hours")
            token = self.issuer.extend(
                old.value, self.config.scaled(self.config.long_token_seconds)
            )
            assert token is not None and token.expires_at is not None
            self._tokens[token.value] = TokenInfo(
                old.principal, "long", self.time(), token.expires_at
            )
            self._counters["refreshes"] += 1
            return self._long_lived_body(token)

    def _long_lived_body(self, token: IssuedToken) -> dict[str, Any]:
        assert token.expires_at is not None
        return {
            "access_token": token.value,
            "token_type": "bearer",
            "expires_in": max(0, round(token.expires_at - self.time())),
        }

    def issue_tokens(
        self, ref: str | int, kind: str = "long", scope: str = BASIC_SCOPE
    ) -> dict[str, Any]:
        """Shortcut for tests: a short- or long-lived token without the browser round trip."""
        if kind not in ("short", "long"):
            raise ValueError("kind must be 'short' or 'long'")
        scopes = parse_scopes(scope)
        account = self.account(ref)
        token = self._issue(account.id, scopes, kind)
        with self._lock:
            self._connected.add(account.id)
        return {**self._long_lived_body(token), "user_id": account.id, "kind": kind}

    def authenticate(self, value: str | None) -> IssuedToken:
        """The live token, or the Graph error saying why not (codes 2500 and 190)."""
        if not value:
            raise graph_error(
                "An active access token must be used to query information about the current user.",
                2500,
            )
        token = self.issuer.authenticate(value)
        if token is not None:
            return token
        with self._lock:
            info = self._tokens.get(value)
        if info is None:
            raise graph_error("Invalid OAuth access token - Cannot parse access token", 190)
        if info.revoked:
            raise graph_error(
                "Error validating access token: The user has not authorized application "
                f"{self.config.client_id}.",
                190,
                458,
            )
        raise graph_error(
            f"Error validating access token: Session has expired on {_pacific(info.expires_at)}. "
            f"The current time is {_pacific(self.time())}.",
            190,
            463,
        )

    def code_owner(self, code: str | None) -> str | None:
        """Account an authorization code was issued for (fault matching)."""
        return self.owner_in(self._codes, code)

    def principal_for(self, value: str | None) -> str | None:
        """Account behind a token, even expired (fault matching)."""
        return self.issuer.principal_of(value)

    def revoke(self, ref: str | int) -> int:
        """Revoke every token of an account (the user removed the app)."""
        account = self.account(ref)
        with self._lock:
            self._connected.discard(account.id)
            for info in self._tokens.values():
                if info.principal == account.id:
                    info.revoked = True
            self._counters["revocations"] += 1
        return self.issuer.revoke(account.id)

    def expire(self, ref: str | int) -> int:
        """Expire every access token of an account now."""
        account = self.account(ref)
        with self._lock:
            now = self.time()
            for info in self._tokens.values():
                if info.principal == account.id and info.expires_at > now:
                    info.expires_at = now
        return self.issuer.expire(account.id)

    # ------------------------------------------------------------ BUC limits
    def _window_calls(self, account_id: str, now: float) -> int:
        calls = self._calls.get(account_id)
        if calls is None:
            return 0
        horizon = now - self.config.scaled(self.config.buc_window_seconds)
        while calls and calls[0] <= horizon:
            calls.popleft()
        return len(calls)

    def _usage_header(self, account_id: str, now: float, floor: int = 0) -> dict[str, str]:
        c = self.config
        used = self._window_calls(account_id, now)
        pct = min(100, math.floor(100 * used / c.buc_call_limit))
        regain = 0
        if used >= c.buc_call_limit:
            calls = self._calls[account_id]
            frees_at = calls[used - c.buc_call_limit] + c.scaled(c.buc_window_seconds)
            regain = max(1, math.ceil((frees_at - now) / 60))
        pct, regain = max(pct, floor), max(regain, 1 if floor else 0)
        usage = {
            account_id: [
                {
                    "type": "instagram",
                    "call_count": pct,
                    "total_cputime": pct // 2,
                    "total_time": pct // 2,
                    "estimated_time_to_regain_access": regain,
                }
            ]
        }
        return {"X-Business-Use-Case-Usage": json.dumps(usage, separators=(",", ":"))}

    def count_call(self, account_id: str) -> RateDecision:
        """Charge one Graph call to the app-user pair unless it is throttled."""
        with self._lock:
            now = self.time()
            used = self._window_calls(account_id, now)
            throttled = used >= self.config.buc_call_limit and self.config.rate_limits_enabled
            if throttled:
                self._counters["throttled"] += 1
            else:
                self._calls.setdefault(account_id, deque()).append(now)
            return RateDecision(self._usage_header(account_id, now), throttled)

    def usage_header(self, account_id: str, floor: int = 0) -> dict[str, str]:
        """The current ``X-Business-Use-Case-Usage`` header (``floor``: minimum percentage)."""
        with self._lock:
            return self._usage_header(account_id, self.time(), floor)

    def throttle_error(self) -> GraphError:
        """The Business Use Case throttling error (code 80002, transient)."""
        return graph_error(
            BUC_MESSAGE, 80002, status=self.config.throttle_http_status, is_transient=True
        )

    def exhaust(self, ref: str | int) -> dict[str, Any]:
        """Fill an account's rolling window so its next call is throttled."""
        account = self.account(ref)
        with self._lock:
            now = self.time()
            used = self._window_calls(account.id, now)
            calls = self._calls.setdefault(account.id, deque())
            calls.extend([now] * max(0, self.config.buc_call_limit - used))
            return {"account": account.id, "calls_in_window": len(calls)}

    # ---------------------------------------------------------------- control
    def control_tokens(self, ref: str, body: dict[str, Any]) -> Any:
        """A ``kind`` (short/long) token for an account with ``scope``."""
        kind, scope = str(body.get("kind", "long")), str(body.get("scope", BASIC_SCOPE))
        return self.issue_tokens(ref, kind, scope)

    def control_exhaust(self, body: dict[str, Any]) -> Any:
        """Fill the rolling window of ``account``."""
        return self.exhaust(str(body["account"]))

    def reset_usage(self) -> None:
        """Forget all Business Use Case usage."""
        with self._lock:
            self._calls.clear()

    # ------------------------------------------------------------------ stats
    def stats(self) -> dict[str, Any]:
        """Requests per endpoint, responses per status, OAuth counters, BUC usage."""
        with self._lock:
            now = self.time()
            return {
                **self.request_stats(),
                "throttled": self._counters["throttled"],
                "faults_fired": self._counters["faults_fired"],
                "code_exchanges": self._counters["code_exchanges"],
                "long_lived_exchanges": self._counters["long_lived_exchanges"],
                "refreshes": self._counters["refreshes"],
                "revocations": self._counters["revocations"],
                "buc_calls_in_window": {
                    a: n for a in self._accounts if (n := self._window_calls(a, now))
                },
            }


def parse_scopes(raw: str | None) -> frozenset[str]:
    """Comma- or space-separated scopes; ValueError naming unknown ones."""
    scopes = frozenset(s for s in (raw or "").replace(",", " ").split() if s)
    unknown = scopes - KNOWN_SCOPES
    if unknown:
        raise ValueError(f"Invalid scope field(s): {', '.join(sorted(unknown))}")
    return scopes


def require_basic(token: IssuedToken) -> None:
    """Graph code 10 when the token lacks ``instagram_business_basic``."""
    if BASIC_SCOPE not in token.scopes:
        raise graph_error("(#10) Application does not have permission for this action", 10)


def parse_fields(raw: str | None) -> list[str]:
    """The ``fields`` list; nested selections such as ``children{media_url}`` keep the name."""
    fields: list[str] = []
    depth, current = 0, ""
    for ch in raw or "":
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
        elif ch == "," and depth == 0:
            fields.append(current.strip())
            current = ""
        elif depth == 0:
            current += ch
    fields.append(current.strip())
    return [f for f in fields if f]


def _select(values: dict[str, Any], fields: list[str], node_type: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    allowed = USER_FIELDS if node_type == "User" else MEDIA_FIELDS
    for name in fields:
        if name not in allowed:
            raise bad_param(
                f"Tried accessing nonexisting field ({name}) on node type ({node_type})"
            )
        if name in values:
            out[name] = values[name]
    out["id"] = values["id"]
    return out


def _timestamp_param(params: dict[str, str], name: str) -> int | None:
    raw = params.get(name)
    if raw is None or raw == "":
        return None
    try:
        return int(float(raw))
    except ValueError:
        pass
    try:
        return int(datetime.fromisoformat(raw.replace("Z", "+00:00")).timestamp())
    except ValueError:
        raise bad_param(f"Param {name} must be a unix timestamp or a date") from None


def _query(params: dict[str, str]) -> str:
    return urlencode(params)
