"""In-memory state of the X (Twitter) API v2 sandbox: users, posts, OAuth 2.0, rate limits.

Behaviour follows the X documentation: OAuth 2.0 Authorization Code with PKCE (codes valid
30 s, access tokens 2 h, refresh tokens only with ``offline.access`` and rotated on every
use), ``GET /2/users/me`` and ``GET /2/users/:id/tweets`` (newest first, 5..100 per page,
only the 3,200 most recent posts reachable), and per-endpoint 15-minute windows counted per
user and per app with ``x-rate-limit-*`` headers. Durations are divided by ``time_scale``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from bisect import insort
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sync_pipeline.sandbox.common import (
    AccountIndex,
    HistoryAccountSandboxState,
    IssuedToken,
    OAuthIssuer,
    RateDecision,
    SandboxApiError,
    ScaledConfig,
    WindowCounter,
)
from sync_pipeline.sandbox.x import history

ACCESS_TOKEN_SECONDS = 7200.0
AUTH_CODE_SECONDS = 30.0
WINDOW_SECONDS = 900.0
TWEPOCH_MS = 1_288_834_974_657
PROBLEM_INVALID = "https://api.twitter.com/2/problems/invalid-request"
PROBLEM_NOT_FOUND = "https://api.twitter.com/2/problems/resource-not-found"
KNOWN_SCOPES = frozenset((
    "tweet.read", "tweet.write", "tweet.moderate.write", "users.email", "users.read",
    "follows.read", "follows.write", "offline.access", "space.read", "mute.read", "mute.write",
    "like.read", "like.write", "list.read", "list.write", "block.read", "block.write",
    "bookmark.read", "bookmark.write", "media.write", "dm.read", "dm.write",
))  # fmt: skip
READ_SCOPES = frozenset({"tweet.read", "users.read"})
TWEET_FIELDS = (
    "article", "attachments", "author_id", "card_uri", "community_id", "context_annotations",
    "conversation_id", "created_at", "display_text_range", "edit_controls",
    "edit_history_tweet_ids", "entities", "geo", "id", "in_reply_to_user_id", "lang",
    "media_metadata", "non_public_metrics", "note_tweet", "organic_metrics", "possibly_sensitive",
    "promoted_metrics", "public_metrics", "referenced_tweets", "reply_settings", "scopes",
    "source", "text", "withheld",
)  # fmt: skip
USER_FIELDS = (
    "affiliation", "connection_status", "created_at", "description", "entities", "id", "location",
    "most_recent_tweet_id", "name", "pinned_tweet_id", "profile_banner_url", "profile_image_url",
    "protected", "public_metrics", "receives_your_dm", "subscription_type", "url", "username",
    "verified", "verified_type", "withheld",
)  # fmt: skip
TIMELINE_PARAMS = (
    "id", "since_id", "until_id", "max_results", "pagination_token", "exclude", "start_time",
    "end_time", "expansions", "tweet.fields", "media.fields", "poll.fields", "user.fields",
    "place.fields",
)  # fmt: skip
ME_PARAMS = ("expansions", "tweet.fields", "user.fields")
WORDS = (
    "shipping", "coffee", "thread", "today", "build", "deploy", "morning", "run", "read",
    "weekend", "release", "notes", "idea", "launch", "debugging", "music", "walk", "paper",
    "design", "team", "learning", "sunset", "garden", "tests", "refactor", "travel",
)  # fmt: skip
TAGS = ("buildinpublic", "python", "100DaysOfCode", "running", "photography", "devlife")

#: Endpoint keys used for limits and stats.
ME = "GET /2/users/me"
TIMELINE = "GET /2/users/:id/tweets"


class XApiError(SandboxApiError):
    """An HTTP error with an X-style JSON body (and optional extra headers)."""


def problem(status: int, title: str) -> dict[str, Any]:
    """X's plain problem body (``type: about:blank``) used for 401, 403, 429 and 5xx."""
    return {"title": title, "detail": title, "type": "about:blank", "status": status}


def unauthorized() -> XApiError:
    """401 for a missing, invalid, expired or revoked bearer token."""
    return XApiError(401, problem(401, "Unauthorized"))


def too_many_requests_body() -> dict[str, Any]:
    """Body of a rate-limited response (no Retry-After; use ``x-rate-limit-reset``)."""
    return problem(429, "Too Many Requests")


def invalid_request(parameter: str, values: list[str], message: str) -> XApiError:
    """400 Invalid Request naming the offending parameter."""
    return XApiError(
        400,
        {
            "errors": [{"parameters": {parameter: values}, "message": message}],
            "title": "Invalid Request",
            "detail": "One or more parameters to your request was invalid.",
            "type": PROBLEM_INVALID,
        },
    )


def oauth_error(status: int, error: str, description: str) -> XApiError:
    """Error body of the OAuth 2.0 token endpoint."""
    return XApiError(status, {"error": error, "error_description": description})


def parse_rfc3339(name: str, raw: str) -> float:
    """Epoch seconds of an RFC 3339 date-time; 400 when malformed or without a zone."""
    try:
        if "T" not in raw:
            raise ValueError(raw)
        parsed = datetime.fromisoformat(raw.replace("z", "Z"))
    except ValueError:
        raise invalid_request(
            name,
            [raw],
            f"Invalid '{name}':'{raw}'. '{name}' must be a valid RFC 3339 date-time "
            "(YYYY-MM-DDTHH:mm:ssZ)",
        ) from None
    if parsed.tzinfo is None:
        raise invalid_request(
            name, [raw], f"Invalid '{name}':'{raw}'. '{name}' must include a UTC offset or Z"
        )
    return parsed.timestamp()


def pkce_s256(verifier: str) -> str:
    """The S256 code challenge of a verifier (base64url, no padding)."""
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def _b36(n: int) -> str:
    digits = "0123456789abcdefghijklmnopqrstuvwxyz"
    out = ""
    while True:
        n, r = divmod(n, 36)
        out = digits[r] + out
        if n == 0:
            return out


NEXT_PREFIX = "7140dibd"
PREV_PREFIX = "77qpymm8"


def encode_page_token(direction: str, tweet_id: int) -> str:
    """Opaque ``next_token``/``previous_token`` for a position in a timeline."""
    return (NEXT_PREFIX if direction == "next" else PREV_PREFIX) + _b36(tweet_id)


def decode_page_token(raw: str) -> tuple[str, int]:
    """``(direction, tweet_id)`` of a page token; 400 when it is not one of ours."""
    for direction, prefix in (("next", NEXT_PREFIX), ("prev", PREV_PREFIX)):
        if raw.startswith(prefix) and len(raw) > len(prefix):
            try:
                return direction, int(raw[len(prefix) :], 36)
            except ValueError:
                break
    raise invalid_request(
        "pagination_token",
        [raw],
        f"The `pagination_token` query parameter value [{raw}] is not valid",
    )


@dataclass(frozen=True)
class Tweet:
    """A stored post: snowflake id (encodes the creation millisecond) and text."""

    id: int
    author_id: str
    created_ms: int
    text: str

    @property
    def created_at(self) -> float:
        """Creation time in epoch seconds."""
        return self.created_ms / 1000.0


@dataclass
class XAccount:
    """A sandbox X user with its posts in ascending id (= time) order."""

    index: int
    id: str
    username: str
    name: str
    tz: str
    created_at: float
    tweets: list[Tweet] = field(default_factory=list)

    def control_view(self) -> dict[str, Any]:
        """JSON form for ``GET /_sandbox/accounts``."""
        return {
            "id": self.id,
            "handle": self.username,
            "username": self.username,
            "name": self.name,
            "time_zone": self.tz,
            "tweet_count": len(self.tweets),
            "item_count": len(self.tweets),
        }


@dataclass
class XSandboxConfig(ScaledConfig):
    """Settings of one X sandbox; durations are divided by ``time_scale``.

    ``tweet_counts`` maps account indexes (0-based) to exact post counts; the others get a
    natural streaky history over ``history_days``. Limits are per 15-minute window;
    ``None`` for an app limit means the endpoint has no per-app limit.
    """

    seed: int = 7
    accounts: int = 3
    client_id: str = "x-sandbox-client-id"
    client_secret: str = "x-sandbox-client-secret"
    confidential_client: bool = True
    redirect_uris: tuple[str, ...] = ()  # empty: any redirect URI is accepted
    history_days: int = 120
    tweets_per_active_day: float = 3.0
    tweet_counts: dict[int, int] | None = None
    anchor_epoch: float | None = None
    time_scale: float = 1.0
    rate_limits_enabled: bool = True
    timeline_user_limit: int = 900
    timeline_app_limit: int | None = 1500
    me_user_limit: int = 75
    me_app_limit: int | None = None
    max_reachable_posts: int = 3200
    access_token_seconds: float = ACCESS_TOKEN_SECONDS
    auth_code_seconds: float = AUTH_CODE_SECONDS


class XSandboxState(HistoryAccountSandboxState[XSandboxConfig]):
    """Everything the X sandbox knows; all public methods are thread-safe."""

    namespace = "x"
    config_type = XSandboxConfig

    def setup(self) -> None:
        """Accounts with their post histories, the OAuth issuer and the rate windows."""
        c = self.config
        policy = self.token_policy(
            c.access_token_seconds, c.auth_code_seconds, "x", rotate_refresh=True
        )
        self.issuer = OAuthIssuer(policy, self.time)
        self.windows = WindowCounter()
        self._accounts: AccountIndex[XAccount] = AccountIndex()
        self._seq = 0
        self._connected: set[str] = set()
        self._code_owner: dict[str, str] = {}
        self._refresh_owner: dict[str, str] = {}
        explicit = c.tweet_counts or {}
        for index in range(c.accounts):
            self._create_account(index, c.history_days, explicit.get(index))

    # ----------------------------------------------------------------- data
    def _create_account(
        self, index: int, days: int, count: int | None, tz: str | None = None
    ) -> XAccount:
        rng = self.rng("account", index)
        user_id = str(1_400_000_000 + index * 1_000_003 + rng.randrange(1_000_000))
        username = history.pick_handle(rng)
        while self._accounts.has_username(username):
            username = history.pick_handle(rng)
        zone = tz or history.pick_timezone(rng, index)
        profile = history.pick_profile(rng, self.config.tweets_per_active_day)
        created = self.anchor - rng.uniform(400, 4000) * 86400
        account = XAccount(index, user_id, username, history.pick_name(rng), zone, created)
        stamps = history.generate_history(
            self.rng("history", index), zone, self.anchor, days, profile, count
        )
        ms_rng = self.rng("ms", index)
        for ts in stamps:
            account.tweets.append(self._new_tweet(account, ts * 1000 + ms_rng.randrange(1000)))
        account.tweets.sort(key=lambda t: t.id)
        return self._accounts.add(user_id, username, account)

    def _new_tweet(self, account: XAccount, created_ms: int) -> Tweet:
        self._seq += 1
        tweet_id = ((created_ms - TWEPOCH_MS) << 22) | (self._seq % (1 << 22))
        rng = self.rng("text", account.id, created_ms, self._seq)
        words = " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 9)))
        text = f"{words.capitalize()} #{rng.choice(TAGS)}"
        return Tweet(tweet_id, account.id, created_ms, text)

    def account(self, ref: str | int) -> XAccount:
        """An account by id or username (case-insensitive); KeyError when unknown."""
        with self._lock:
            return self._accounts.find(ref)

    def account_ids(self) -> list[str]:
        """All account ids in creation order."""
        with self._lock:
            return list(self._accounts)

    def list_accounts(self) -> list[dict[str, Any]]:
        """Control view of every account."""
        with self._lock:
            return [
                {**a.control_view(), "connected": a.id in self._connected}
                for a in self._accounts.values()
            ]

    def add_account(
        self, history_days: int | None = None, count: int | None = None, tz: str | None = None
    ) -> dict[str, Any]:
        """Create one more account (history over ``history_days``, or exactly ``count`` posts)."""
        if tz is not None:
            history.local_date(0, tz)  # validates the zone name
        with self._lock:
            index = len(self._accounts)
            days = self.config.history_days if history_days is None else int(history_days)
            return self._create_account(index, days, count, tz).control_view()

    def add_items(self, ref: str | int, count: int = 1, at: float | None = None) -> list[str]:
        """Add ``count`` posts one second apart, ending now (or starting at ``at``)."""
        if count < 1:
            raise ValueError("count must be >= 1")
        with self._lock:
            account = self.account(ref)
            now = self.time()
            start = now - (count - 1) if at is None else float(at)
            if start + count - 1 > now:
                raise ValueError("posts cannot be dated in the future")
            added = []
            for k in range(count):
                tweet = self._new_tweet(account, int((start + k) * 1000))
                insort(account.tweets, tweet, key=lambda t: t.id)
                added.append(str(tweet.id))
            return added

    def item_times(self, ref: str | int, reachable_only: bool = True) -> list[float]:
        """Creation times of an account's posts, oldest first."""
        with self._lock:
            tweets = self.account(ref).tweets
            if reachable_only:
                tweets = tweets[-self.config.max_reachable_posts :]
            return [t.created_at for t in tweets]

    def daily_counts(
        self, ref: str | int, tz: str | None = None, reachable_only: bool = True
    ) -> dict[str, int]:
        """Exact posts per local day (ISO date -> count) in ``tz`` (default: the account's).

        By default only the posts the API can return (the 3,200 most recent) are counted.
        """
        account = self.account(ref)
        return history.daily_counts(self.item_times(ref, reachable_only), tz or account.tz)

    def user_json(self, account: XAccount, fields: list[str]) -> dict[str, Any]:
        """User object with the default fields plus the requested ``user.fields``."""
        out: dict[str, Any] = {"id": account.id, "name": account.name}
        out["username"] = account.username
        rng = self.rng("user-metrics", account.id)
        extra: dict[str, Any] = {
            "created_at": history.utc_iso(account.created_at, millis=True),
            "description": f"Posting about {rng.choice(TAGS)} and {rng.choice(WORDS)}.",
            "protected": False,
            "verified": False,
            "verified_type": "none",
            "profile_image_url": (
                f"https://pbs.twimg.com/profile_images/{account.id}/avatar_normal.jpg"
            ),
            "url": "",
            "public_metrics": {
                "followers_count": rng.randint(10, 50_000),
                "following_count": rng.randint(10, 2_000),
                "tweet_count": len(account.tweets),
                "listed_count": rng.randint(0, 300),
                "like_count": rng.randint(0, 20_000),
                "media_count": rng.randint(0, 500),
            },
        }
        if account.tweets:
            extra["most_recent_tweet_id"] = str(account.tweets[-1].id)
        for name in fields:
            if name in extra:
                out[name] = extra[name]
        return out

    def tweet_json(self, tweet: Tweet, fields: list[str]) -> dict[str, Any]:
        """Post object with the default fields plus the requested ``tweet.fields``."""
        out: dict[str, Any] = {
            "id": str(tweet.id),
            "text": tweet.text,
            "edit_history_tweet_ids": [str(tweet.id)],
        }
        if not fields:
            return out
        rng = self.rng("tweet-metrics", tweet.id)
        impressions = rng.randint(20, 20_000)
        extra: dict[str, Any] = {
            "created_at": history.utc_iso(tweet.created_at, millis=True),
            "author_id": tweet.author_id,
            "conversation_id": str(tweet.id),
            "lang": "en",
            "possibly_sensitive": False,
            "reply_settings": "everyone",
            "edit_controls": {
                "edits_remaining": 5,
                "is_edit_eligible": True,
                "editable_until": history.utc_iso(tweet.created_at + 3600, millis=True),
            },
            "public_metrics": {
                "retweet_count": rng.randint(0, impressions // 200 + 1),
                "reply_count": rng.randint(0, impressions // 300 + 1),
                "like_count": rng.randint(0, impressions // 20 + 1),
                "quote_count": rng.randint(0, impressions // 1000 + 1),
                "bookmark_count": rng.randint(0, impressions // 500 + 1),
                "impression_count": impressions,
            },
        }
        for name in fields:
            if name in extra:
                out[name] = extra[name]
        return out

    # -------------------------------------------------------------- API reads
    def me(self, token: IssuedToken, params: dict[str, str]) -> dict[str, Any]:
        """``GET /2/users/me``."""
        check_params(params, ME_PARAMS)
        user_fields = list_param(params, "user.fields", USER_FIELDS)
        list_param(params, "tweet.fields", TWEET_FIELDS)
        expansions = list_param(params, "expansions", ("pinned_tweet_id", "most_recent_tweet_id"))
        require_scopes(token)
        account = self.account(token.principal)
        with self._lock:
            body: dict[str, Any] = {"data": self.user_json(account, user_fields)}
            if "most_recent_tweet_id" in expansions and account.tweets:
                tweet_fields = list_param(params, "tweet.fields", TWEET_FIELDS)
                body["data"]["most_recent_tweet_id"] = str(account.tweets[-1].id)
                body["includes"] = {"tweets": [self.tweet_json(account.tweets[-1], tweet_fields)]}
            return body

    def timeline(self, token: IssuedToken, user_id: str, params: dict[str, str]) -> dict[str, Any]:
        """``GET /2/users/:id/tweets``: newest first, filtered and paged as X does."""
        check_params({**params, "id": user_id}, TIMELINE_PARAMS)
        if not user_id.isdigit() or len(user_id) > 19:
            raise invalid_request(
                "id", [user_id], f"The `id` query parameter value [{user_id}] is not valid"
            )
        max_results = _int_param(params, "max_results", 10)
        if not 5 <= max_results <= 100:
            raise invalid_request(
                "max_results",
                [params["max_results"]],
                f"The `max_results` query parameter value [{params['max_results']}] "
                "is not between 5 and 100",
            )
        tweet_fields = list_param(params, "tweet.fields", TWEET_FIELDS)
        user_fields = list_param(params, "user.fields", USER_FIELDS)
        expansions = list_param(
            params,
            "expansions",
            (
                "article.cover_media",
                "article.media_entities",
                "attachments.media_keys",
                "attachments.media_source_tweet",
                "attachments.poll_ids",
                "author_id",
                "edit_history_tweet_ids",
                "entities.mentions.username",
                "geo.place_id",
                "in_reply_to_user_id",
                "entities.note.mentions.username",
                "referenced_tweets.id",
                "referenced_tweets.id.attachments.media_keys",
                "referenced_tweets.id.author_id",
            ),
        )
        list_param(params, "exclude", ("replies", "retweets"))
        for name in ("media.fields", "poll.fields", "place.fields"):
            list_param(params, name, None)
        since_id = _id_param(params, "since_id")
        until_id = _id_param(params, "until_id")
        start = (
            parse_rfc3339("start_time", params["start_time"]) if "start_time" in params else None
        )
        end = parse_rfc3339("end_time", params["end_time"]) if "end_time" in params else None
        if start is not None and end is not None and start >= end:
            raise invalid_request(
                "start_time",
                [params["start_time"]],
                f"The `start_time` query parameter value [{params['start_time']}] must be "
                f"before the `end_time` query parameter value [{params['end_time']}]",
            )
        page = (
            decode_page_token(params["pagination_token"]) if "pagination_token" in params else None
        )
        require_scopes(token)
        with self._lock:
            account = self._accounts.get(user_id)
            if account is None:
                return {
                    "errors": [
                        {
                            "value": user_id,
                            "detail": f"Could not find user with id: [{user_id}].",
                            "title": "Not Found Error",
                            "resource_type": "user",
                            "parameter": "id",
                            "resource_id": user_id,
                            "type": PROBLEM_NOT_FOUND,
                        }
                    ]
                }
            reachable = account.tweets[-self.config.max_reachable_posts :]
            rows = [
                t
                for t in reversed(reachable)
                if (since_id is None or t.id > since_id)
                and (until_id is None or t.id < until_id)
                and (start is None or t.created_ms // 1000 >= start)
                and (end is None or t.created_ms // 1000 < end)
            ]
            if page is None:
                chosen = rows[:max_results]
            elif page[0] == "next":
                older = [t for t in rows if t.id < page[1]]
                chosen = older[:max_results]
            else:
                newer = [t for t in rows if t.id > page[1]]
                chosen = newer[-max_results:]
            meta: dict[str, Any] = {"result_count": len(chosen)}
            if not chosen:
                return {"meta": meta}
            meta["newest_id"] = str(chosen[0].id)
            meta["oldest_id"] = str(chosen[-1].id)
            if rows and rows[-1].id < chosen[-1].id:
                meta["next_token"] = encode_page_token("next", chosen[-1].id)
            if rows and rows[0].id > chosen[0].id:
                meta["previous_token"] = encode_page_token("prev", chosen[0].id)
            body: dict[str, Any] = {"data": [self.tweet_json(t, tweet_fields) for t in chosen]}
            if "author_id" in expansions:
                body["data"] = [{**d, "author_id": account.id} for d in body["data"]]
                body["includes"] = {"users": [self.user_json(account, user_fields)]}
            body["meta"] = meta
            return body

    # ------------------------------------------------------------------ OAuth
    def resolve_user(self, ref: str | None) -> str:
        """Account id chosen by ``sandbox_user`` (id or username), or the next unconnected."""
        with self._lock:
            return self.account(ref).id if ref else self._accounts.first_not_in(self._connected)

    def redirect_allowed(self, redirect_uri: str) -> bool:
        """Whether the redirect URI is registered (any when none are configured)."""
        return not self.config.redirect_uris or redirect_uri in self.config.redirect_uris

    def new_code(
        self,
        principal: str,
        scopes: frozenset[str],
        redirect_uri: str,
        challenge: str,
        method: str,
    ) -> str:
        """Authorization code bound to the PKCE challenge and redirect URI."""
        code = self.issuer.new_code(principal, scopes, redirect_uri, f"{method}:{challenge}")
        with self._lock:
            self._code_owner[code] = principal
            self._counters["codes_issued"] += 1
        return code

    def check_client(self, authorization: str | None, client_id: str | None) -> None:
        """Client authentication at the token endpoint (HTTP Basic for confidential clients)."""
        c = self.config
        scheme, _, value = (authorization or "").partition(" ")
        if scheme.lower() == "basic" and value.strip():
            try:
                decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
            except (ValueError, UnicodeDecodeError):
                decoded = ""
            given_id, _, given_secret = decoded.partition(":")
            if hmac.compare_digest(given_id, c.client_id) and hmac.compare_digest(
                given_secret, c.client_secret
            ):
                return
            raise oauth_error(401, "unauthorized_client", "Missing valid authorization header")
        if c.confidential_client:
            raise oauth_error(401, "unauthorized_client", "Missing valid authorization header")
        if client_id != c.client_id:
            raise oauth_error(400, "invalid_request", "Missing required parameter [client_id].")

    def exchange_code(self, params: dict[str, str]) -> dict[str, Any]:
        """``grant_type=authorization_code`` with PKCE verification."""
        for name in ("code", "redirect_uri", "code_verifier"):
            if not params.get(name):
                raise oauth_error(400, "invalid_request", f"Missing required parameter [{name}].")
        pending = self.issuer.take_code(params["code"], params["redirect_uri"])
        if pending is None:
            raise oauth_error(
                400, "invalid_request", "Value passed for the authorization code was invalid."
            )
        method, _, challenge = (pending.code_challenge or "plain:").partition(":")
        verifier = params["code_verifier"]
        expected = pkce_s256(verifier) if method == "S256" else verifier
        if not hmac.compare_digest(expected, challenge):
            raise oauth_error(
                400, "invalid_request", "Value passed for the authorization code was invalid."
            )
        access, refresh = self.issuer.issue(pending.principal, pending.scopes)
        with self._lock:
            self._connected.add(pending.principal)
            self._counters["code_exchanges"] += 1
        return self._token_response(access, refresh)

    def refresh(self, params: dict[str, str]) -> dict[str, Any]:
        """``grant_type=refresh_token``: new access token and a rotated refresh token."""
        if not params.get("refresh_token"):
            raise oauth_error(400, "invalid_request", "Missing required parameter [refresh_token].")
        result = self.issuer.refresh(params["refresh_token"])
        if result is None:
            raise oauth_error(400, "invalid_request", "Value passed for the token was invalid.")
        access, refresh = result
        with self._lock:
            self._refresh_owner.pop(params["refresh_token"], None)
            self._counters["refreshes"] += 1
        return self._token_response(access, refresh)

    def _token_response(self, access: IssuedToken, refresh: str | None) -> dict[str, Any]:
        """Token endpoint body; the refresh token only goes out with ``offline.access``.

        (The shared issuer mints one for every grant; without ``offline.access`` it is never
        handed out, so it can never be used.)
        """
        assert access.expires_at is not None
        if "offline.access" not in access.scopes:
            refresh = None
        body: dict[str, Any] = {
            "token_type": "bearer",
            "expires_in": max(0, round(access.expires_at - self.time())),
            "access_token": access.value,
            "scope": " ".join(sorted(access.scopes)),
        }
        if refresh is not None:
            body["refresh_token"] = refresh
            with self._lock:
                self._refresh_owner[refresh] = access.principal
        return body

    def issue_tokens(
        self, ref: str | int, scope: str = "tweet.read users.read offline.access"
    ) -> dict[str, Any]:
        """Shortcut for tests: a token response without the browser round trip."""
        scopes = parse_scopes(scope)
        account = self.account(ref)
        access, refresh = self.issuer.issue(account.id, scopes)
        with self._lock:
            self._connected.add(account.id)
        return {**self._token_response(access, refresh), "user_id": account.id}

    def authenticate(self, value: str | None) -> IssuedToken:
        """The live token or X's 401."""
        token = self.issuer.authenticate(value)
        if token is None:
            raise unauthorized()
        return token

    def principal_for(self, token: str | None = None, grant: str | None = None) -> str | None:
        """Who an access token, code or refresh token belongs to (fault matching, stats)."""
        if token:
            return self.issuer.principal_of(token)
        with self._lock:
            return self._code_owner.get(grant or "") or self._refresh_owner.get(grant or "")

    def revoke(self, ref: str | int) -> int:
        """Revoke every token of an account; returns how many."""
        account = self.account(ref)
        with self._lock:
            self._connected.discard(account.id)
            self._counters["revocations"] += 1
        return self.issuer.revoke(account.id)

    def expire(self, ref: str | int) -> int:
        """Expire every access token of an account now."""
        return self.issuer.expire(self.account(ref).id)

    # ---------------------------------------------------------------- control
    def control_tokens(self, ref: str, body: dict[str, Any]) -> Any:
        """Tokens for an account with ``scope`` (default: read plus offline access)."""
        scope = str(body.get("scope", "tweet.read users.read offline.access"))
        return self.issue_tokens(ref, scope)

    def control_exhaust(self, body: dict[str, Any]) -> Any:
        """Spend a window: ``endpoint`` (me/tweets), ``account`` and ``scope`` (user/app)."""
        endpoint, scope = str(body.get("endpoint", "tweets")), str(body.get("scope", "user"))
        return self.exhaust(endpoint, body.get("account"), scope)

    # ------------------------------------------------------------ rate limits
    def _limits(self, endpoint: str) -> tuple[int, int | None]:
        c = self.config
        if endpoint == ME:
            return c.me_user_limit, c.me_app_limit
        return c.timeline_user_limit, c.timeline_app_limit

    def _window(self) -> tuple[float, float]:
        length = self.config.scaled(WINDOW_SECONDS)
        start = WindowCounter.aligned_start(self.time(), length)
        return start, start + length

    def _buckets(self, endpoint: str, principal: str) -> list[tuple[str, int]]:
        user_limit, app_limit = self._limits(endpoint)
        buckets = [(f"user:{endpoint}:{principal}", user_limit)]
        if app_limit is not None:
            buckets.append((f"app:{endpoint}:{self.config.client_id}", app_limit))
        return buckets

    def count_request(self, endpoint: str, principal: str) -> RateDecision:
        """Charge one request to the user and app windows; refuse it when one is spent."""
        with self._lock:
            start, end = self._window()
            buckets = self._buckets(endpoint, principal)
            spent = any(self.windows.peek(name, start) >= limit for name, limit in buckets)
            limited = spent and self.config.rate_limits_enabled
            if not limited:
                for name, _ in buckets:
                    self.windows.add(name, start)
            else:
                self._counters["rate_limited"] += 1
            return RateDecision(self._headers(buckets, start, end), limited)

    def rate_headers(self, endpoint: str, principal: str) -> dict[str, str]:
        """Current ``x-rate-limit-*`` headers without charging a request."""
        with self._lock:
            start, end = self._window()
            return self._headers(self._buckets(endpoint, principal), start, end)

    def _headers(self, buckets: list[tuple[str, int]], start: float, end: float) -> dict[str, str]:
        remaining = [(max(0, limit - self.windows.peek(n, start)), limit) for n, limit in buckets]
        left, limit = min(remaining, key=lambda r: r[0])
        return {
            "x-rate-limit-limit": str(limit),
            "x-rate-limit-remaining": str(left),
            "x-rate-limit-reset": str(int(-(-end // 1))),
        }

    def exhaust(
        self, endpoint: str = TIMELINE, ref: str | int | None = None, scope: str = "user"
    ) -> dict[str, Any]:
        """Spend the rest of a window (``scope`` user needs an account, or ``app``)."""
        if endpoint not in (ME, TIMELINE):
            endpoint = {"me": ME, "tweets": TIMELINE, "timeline": TIMELINE}.get(endpoint, "")
            if not endpoint:
                raise ValueError("endpoint must be 'me' or 'tweets'")
        user_limit, app_limit = self._limits(endpoint)
        with self._lock:
            start, end = self._window()
            if scope == "app":
                if app_limit is None:
                    raise ValueError(f"{endpoint} has no per-app limit")
                name, limit = f"app:{endpoint}:{self.config.client_id}", app_limit
            elif scope == "user":
                if ref is None:
                    raise ValueError("scope 'user' needs an account")
                name, limit = f"user:{endpoint}:{self.account(ref).id}", user_limit
            else:
                raise ValueError("scope must be 'user' or 'app'")
            used = self.windows.peek(name, start)
            if used < limit:
                self.windows.add(name, start, limit - used)
            return {"endpoint": endpoint, "scope": scope, "limit": limit, "reset": int(end)}

    def reset_usage(self) -> None:
        """Forget all rate-limit usage."""
        self.windows.reset()

    def usage(self) -> dict[str, int]:
        """Usage of every bucket in the current window."""
        with self._lock:
            start, _ = self._window()
            out: dict[str, int] = {}
            for endpoint in (ME, TIMELINE):
                for account_id in self._accounts:
                    for name, _ in self._buckets(endpoint, account_id):
                        used = self.windows.peek(name, start)
                        if used:
                            out[name] = used
            return out

    # ------------------------------------------------------------------ stats
    def stats(self) -> dict[str, Any]:
        """Requests per endpoint, responses per status, OAuth and limit counters, usage."""
        with self._lock:
            return {
                **self.request_stats(),
                "rate_limited": self._counters["rate_limited"],
                "faults_fired": self._counters["faults_fired"],
                "code_exchanges": self._counters["code_exchanges"],
                "refreshes": self._counters["refreshes"],
                "revocations": self._counters["revocations"],
                "usage": self.usage(),
            }


def parse_scopes(raw: str | None) -> frozenset[str]:
    """Space-separated scopes; ValueError naming unknown ones."""
    scopes = frozenset((raw or "").replace("+", " ").split())
    unknown = scopes - KNOWN_SCOPES
    if unknown:
        raise ValueError(f"unknown scopes: {sorted(unknown)}")
    return scopes


def require_scopes(token: IssuedToken, needed: frozenset[str] = READ_SCOPES) -> None:
    """X answers 403 when the token lacks a scope the endpoint needs."""
    if not needed <= token.scopes:
        raise XApiError(403, problem(403, "Forbidden"))


def check_params(params: dict[str, str], allowed: tuple[str, ...]) -> None:
    """400 for a query parameter the endpoint does not know."""
    for name, value in params.items():
        if name not in allowed:
            raise invalid_request(
                name,
                [value],
                f"The query parameter [{name}] is not one of [{','.join(allowed)}]",
            )


def list_param(params: dict[str, str], name: str, allowed: tuple[str, ...] | None) -> list[str]:
    """A comma-separated parameter's values, each checked against ``allowed``."""
    raw = params.get(name)
    if raw is None:
        return []
    values = [v for v in raw.split(",") if v]
    for value in values:
        if allowed is not None and value not in allowed:
            raise invalid_request(
                name,
                [raw],
                f"The `{name}` query parameter value [{value}] is not one of [{','.join(allowed)}]",
            )
    return values


def _int_param(params: dict[str, str], name: str, default: int) -> int:
    raw = params.get(name)
    if raw is None:
        return default
    try:
        return int(raw)
    except ValueError:
        raise invalid_request(
            name, [raw], f"The `{name}` query parameter value [{raw}] is not a number"
        ) from None


def _id_param(params: dict[str, str], name: str) -> int | None:
    raw = params.get(name)
    if raw is None:
        return None
    if not raw.isdigit() or len(raw) > 19:
        raise invalid_request(
            name,
            [raw],
            f"The `{name}` query parameter value [{raw}] does not match ^[0-9]{{1,19}}$",
        )
    return int(raw)
