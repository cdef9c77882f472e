"""YouTube Data API v3 client resource: Google OAuth, uploads per local day, daily quota."""

from __future__ import annotations

import datetime as dt
import time
from typing import Any, ClassVar
from urllib.parse import urlencode, urlsplit

import httpx
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from sync_pipeline.core.budget import Window
from sync_pipeline.core.client import Limited, body_text
from sync_pipeline.core.daily import (
    Account,
    DailyActivityClient,
    Grant,
    count_local_days,
    local_day_bounds,
)
from sync_pipeline.core.errors import (
    AuthRevokedError,
    ConfigError,
    NotFoundError,
    PermanentError,
    RateLimitedError,
    TransientError,
)
from sync_pipeline.core.http import CallStats, retry_after_seconds, sent_at
from sync_pipeline.core.oauth import pkce_pair
from sync_pipeline.core.tokens import TokenSet, refresh_token_of

CHANNELS = "/youtube/v3/channels"
PLAYLIST_ITEMS = "/youtube/v3/playlistItems"
READONLY_SCOPE = "https://www.googleapis.com/auth/youtube.readonly"
GOOGLE_ACCOUNTS = "https://accounts.google.com"
GOOGLE_TOKEN_URL = "https://oauth2.googleapis.com/token"
DAY = 86400
QUOTA_REASONS = frozenset({"quotaExceeded", "dailyLimitExceeded"})
RATE_REASONS = frozenset({"rateLimitExceeded", "userRateLimitExceeded"})
SCOPE_REASONS = frozenset({"insufficientPermissions", "ACCESS_TOKEN_SCOPE_INSUFFICIENT"})
#: Token-endpoint errors meaning the user has to authorize again.
USER_GRANT_ERRORS = frozenset({"invalid_grant", "access_denied", "invalid_scope"})
#: Token-endpoint errors meaning the app's OAuth client settings are wrong.
APP_CONFIG_ERRORS = frozenset(
    {"invalid_client", "unauthorized_client", "redirect_uri_mismatch", "unsupported_grant_type"}
)


class TokenResponse(BaseModel):
    """Body of Google's ``POST /token`` (a refresh returns no refresh token)."""

    access_token: str
    expires_in: int | None = None
    refresh_token: str | None = None
    scope: str = ""
    token_type: str | None = None


class RelatedPlaylists(BaseModel):
    """``contentDetails.relatedPlaylists`` of a channel."""

    uploads: str = ""


class ChannelContentDetails(BaseModel):
    """``contentDetails`` of a channel."""

    model_config = ConfigDict(populate_by_name=True)

    related: RelatedPlaylists = Field(alias="relatedPlaylists", default_factory=RelatedPlaylists)


class ChannelSnippet(BaseModel):
    """``snippet`` of a channel."""

    model_config = ConfigDict(populate_by_name=True)

    title: str = ""
    custom_url: str | None = Field(default=None, alias="customUrl")


class ChannelResource(BaseModel):
    """A ``youtube#channel`` with the parts we ask for."""

    model_config = ConfigDict(populate_by_name=True)

    id: str
    snippet: ChannelSnippet = Field(default_factory=ChannelSnippet)
    content: ChannelContentDetails = Field(
        alias="contentDetails", default_factory=ChannelContentDetails
    )


class ChannelListResponse(BaseModel):
    """``channels.list``."""

    items: list[ChannelResource] = Field(default_factory=list)


class ItemContentDetails(BaseModel):
    """``contentDetails`` of an uploads-playlist item."""

    model_config = ConfigDict(populate_by_name=True)

    video_id: str = Field(alias="videoId")
    published_at: dt.datetime | None = Field(default=None, alias="videoPublishedAt")


class PlaylistItem(BaseModel):
    """A ``youtube#playlistItem``; private or deleted videos have no publish time."""

    model_config = ConfigDict(populate_by_name=True)

    content: ItemContentDetails = Field(alias="contentDetails")


class PlaylistItemListResponse(BaseModel):
    """One page of ``playlistItems.list``."""

    model_config = ConfigDict(populate_by_name=True)

    items: list[PlaylistItem] = Field(default_factory=list)
    next_page_token: str | None = Field(default=None, alias="nextPageToken")


def _error_reasons(response: httpx.Response) -> set[str]:
    """``error.errors[].reason`` (and ``error.status``) of a Google API error body."""
    try:
        body = response.json()
    except ValueError:
        return set()
    error = body.get("error") if isinstance(body, dict) else None
    if not isinstance(error, dict):
        return set()
    reasons = {str(e.get("reason")) for e in error.get("errors") or [] if isinstance(e, dict)}
    for detail in error.get("details") or []:
        if isinstance(detail, dict) and detail.get("reason"):
            reasons.add(str(detail["reason"]))
    return reasons


def _oauth_error(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return ""
    value = body.get("error") if isinstance(body, dict) else None
    return value if isinstance(value, str) else ""


class YouTubeResource(DailyActivityClient):
    """YouTube Data API v3 with Google OAuth (1-hour access tokens, non-rotating refresh).

    Day rule: a day is the user's local day; a video counts on the local date (user's time
    zone) of its publish time (``contentDetails.videoPublishedAt``) in the channel's uploads
    playlist, deduplicated by video id.

    Quota: 10,000 units per day per project (OAuth client), resetting at midnight Pacific
    time; every list call costs 1 unit. One budget window ``youtube:quota:<client_id>``
    spans that quota day. ``403 quotaExceeded`` marks it spent and parks the work until the
    next Pacific midnight instead of retrying.
    """

    PROVIDER: ClassVar[str] = "youtube"

    base_url: str = Field(default="https://www.googleapis.com", description="Data API host.")
    oauth_base_url: str = Field(
        default=GOOGLE_ACCOUNTS, description="Consent host (/o/oauth2/v2/auth)."
    )
    token_url: str = Field(
        default="",
        description="Token endpoint. Empty: https://oauth2.googleapis.com/token with Google's "
        "consent host, else <oauth_base_url>/token (a sandbox serving both).",
    )
    scope: str = Field(default=READONLY_SCOPE, description="OAuth scopes asked at consent.")
    daily_quota: int = Field(
        default=10_000, ge=1, description="Quota units per day of the project (Google: 10,000)."
    )
    quota_timezone: str = Field(
        default="America/Los_Angeles", description="Time zone whose midnight resets the quota."
    )
    page_size: int = Field(default=50, ge=1, le=50, description="maxResults of playlistItems.")
    rate_limit_backoff_seconds: float = Field(
        default=10.0,
        description="Wait after a short-term rateLimitExceeded that names no Retry-After.",
    )

    # -- budget ---------------------------------------------------------------------------
    def quota_window(self) -> Window:
        """The project's quota day (midnight to midnight in ``quota_timezone``)."""
        return Window(
            f"youtube:quota:{self.client_id}",
            self.seconds(DAY),
            self.daily_quota,
            tz=self.quota_timezone,
        )

    def windows(self, account: str, method: str, path: str) -> list[Window]:
        """Every Data API call spends the project's daily quota."""
        return [self.quota_window()]

    def cost(self, method: str, path: str) -> int:
        """channels.list and playlistItems.list cost 1 unit each."""
        return 1

    def limited(self, account: str, path: str, response: httpx.Response) -> Limited | None:
        """quotaExceeded: spent until the next Pacific midnight; rate limits: a short wait."""
        if response.status_code not in (403, 429):
            return None
        reasons = _error_reasons(response)
        if reasons & QUOTA_REASONS:
            window = self.quota_window()
            retry_at = float(window.end(sent_at(response)))
            when = dt.datetime.fromtimestamp(retry_at, dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
            return Limited(
                retry_at,
                f"daily quota of project {self.client_id} exceeded; it resets at {when}",
                window,
            )
        if response.status_code == 429 or reasons & RATE_REASONS:
            wait = retry_after_seconds(response) or self.rate_limit_backoff_seconds
            return Limited(time.time() + wait, f"rate limited (HTTP {response.status_code})")
        return None

    def error_for(self, response: httpx.Response, what: str) -> Exception:
        """A missing scope means reconnecting; otherwise the base classification."""
        if response.status_code == 403 and _error_reasons(response) & SCOPE_REASONS:
            return AuthRevokedError(
                f"YouTube {what}: the grant lacks the {self.scope} scope; the user must "
                "reconnect and allow read access to their YouTube account."
            )
        return super().error_for(response, what)

    # -- tokens ---------------------------------------------------------------------------
    def token_endpoint(self) -> str:
        """Absolute URL of the token endpoint."""
        if self.token_url:
            return self.token_url
        host = (self.oauth_base_url or self.base_url).rstrip("/")
        if urlsplit(host).hostname == urlsplit(GOOGLE_ACCOUNTS).hostname:
            return GOOGLE_TOKEN_URL
        return f"{host}/token"

    def _token_request(self, form: dict[str, str], grant: str) -> TokenResponse:
        response = self.auth_http().request(
            "POST",
            self.token_endpoint(),
            data={"client_id": self.client_id, "client_secret": self.client_secret, **form},
        )
        status = response.status_code
        if status == 429:
            raise TransientError("Google token endpoint answered HTTP 429")
        if status != 200:
            error = _oauth_error(response)
            if error in APP_CONFIG_ERRORS:
                raise ConfigError(
                    f"Google refused the app's {grant} request ({error}); check the OAuth "
                    "client id, client secret and redirect URI settings."
                )
            if error in USER_GRANT_ERRORS:
                raise AuthRevokedError(
                    f"Google rejected the {grant} grant ({error}: {body_text(response, 200)}); "
                    "the user must reconnect."
                )
            self.token_error(response, grant)
        try:
            return TokenResponse.model_validate(response.json())
        except (ValueError, ValidationError) as exc:
            raise TransientError("Google token endpoint answered an unreadable body") from exc

    @staticmethod
    def _token_set(body: TokenResponse) -> TokenSet:
        expires_at = int(time.time()) + body.expires_in if body.expires_in else None
        return TokenSet(body.access_token, body.refresh_token, expires_at, body.scope)

    def refresh(self, tokens: TokenSet) -> TokenSet:
        """A new access token; Google keeps the refresh token (the store keeps the old one)."""
        refresh_token = refresh_token_of(tokens, "YouTube")
        body = self._token_request(
            {"grant_type": "refresh_token", "refresh_token": refresh_token}, "refresh_token"
        )
        return self._token_set(body)

    # -- OAuth ----------------------------------------------------------------------------
    def consent(self, redirect_uri: str, state: str, **extra: str) -> tuple[str, dict[str, str]]:
        """Google's consent page for offline read access (a refresh token every time)."""
        verifier, challenge = pkce_pair()
        params = {
            "client_id": self.client_id,
            "redirect_uri": redirect_uri,
            "response_type": "code",
            "scope": self.scope,
            "access_type": "offline",
            "prompt": "consent",
            "include_granted_scopes": "true",
            "state": state,
            "code_challenge": challenge,
            "code_challenge_method": "S256",
            **extra,
        }
        url = f"{self.oauth_url('/o/oauth2/v2/auth')}?{urlencode(params)}"
        return url, {"code_verifier": verifier}

    def exchange(self, code: str, redirect_uri: str, secrets: dict[str, str]) -> Grant:
        """Trade the code for tokens, then find the user's channel and uploads playlist."""
        form = {"grant_type": "authorization_code", "code": code, "redirect_uri": redirect_uri}
        if secrets.get("code_verifier"):
            form["code_verifier"] = secrets["code_verifier"]
        tokens = self._token_set(self._token_request(form, "authorization_code"))
        if not tokens.refresh_token:
            raise ConfigError(
                "Google returned no refresh token; remove the app's access in the Google "
                "account settings and connect again (offline access is required)."
            )
        channel = self._my_channel_with(tokens.access_token)
        return Grant(
            tokens,
            channel.id,
            channel.snippet.custom_url or channel.snippet.title or None,
            {"uploads_playlist_id": channel.content.related.uploads},
        )

    def _my_channel_with(self, access_token: str) -> ChannelResource:
        """``channels.list?mine=true`` with a token not stored yet (connect), on the budget."""
        budget = self.app_db.budget()
        windows = self.windows("", "GET", CHANNELS)
        budget.acquire(windows, self.cost("GET", CHANNELS), max_wait=self.max_inline_wait_seconds)
        response = self.http().request(
            "GET",
            CHANNELS,
            params={"part": "contentDetails,snippet", "mine": "true"},
            headers=self.auth_headers(access_token),
        )
        limit = self.limited("", CHANNELS, response)
        if limit is not None:
            if limit.window is not None:
                budget.exhaust(limit.window, now=sent_at(response))
            raise RateLimitedError(f"youtube: {limit.reason}", retry_at=limit.retry_at)
        if response.status_code != 200:
            raise self.error_for(response, f"GET {CHANNELS}")
        return self._only_channel(response)

    @staticmethod
    def _only_channel(response: httpx.Response) -> ChannelResource:
        found = ChannelListResponse.model_validate(response.json()).items
        if not found:
            raise PermanentError(
                "This Google account has no YouTube channel; create one, then connect again."
            )
        return found[0]

    # -- daily counts ---------------------------------------------------------------------
    def uploads_playlist(self, account: Account, stats: CallStats) -> str:
        """Look the uploads playlist id up again and remember it."""
        response = self.call(
            account.user_id,
            "GET",
            CHANNELS,
            params={"part": "contentDetails,snippet", "mine": "true"},
            stats=stats,
        )
        playlist = self._only_channel(response).content.related.uploads
        if not playlist:
            raise PermanentError(f"YouTube channel {account.account_id} has no uploads playlist.")
        self.remember(account, uploads_playlist_id=playlist)
        return playlist

    def uploads_between(
        self,
        account: Account,
        playlist: str,
        lo: dt.datetime,
        hi: dt.datetime,
        stats: CallStats,
    ) -> list[dt.datetime]:
        """Publish times in [lo, hi) of the uploads playlist (newest first; stops past lo)."""
        seen: set[str] = set()
        instants: list[dt.datetime] = []
        page_token: str | None = None
        while True:
            params: dict[str, Any] = {
                "part": "contentDetails",
                "playlistId": playlist,
                "maxResults": self.page_size,
            }
            if page_token:
                params["pageToken"] = page_token
            response = self.call(account.user_id, "GET", PLAYLIST_ITEMS, params=params, stats=stats)
            try:
                page = PlaylistItemListResponse.model_validate(response.json())
            except (ValueError, ValidationError) as exc:
                raise TransientError(f"YouTube answered an unreadable page: {exc}") from exc
            past_start = False
            for item in page.items:
                published = item.content.published_at
                if published is None:
                    continue  # private or deleted video
                if published.tzinfo is None:
                    published = published.replace(tzinfo=dt.UTC)
                if published < lo:
                    past_start = True
                    continue
                if published >= hi or item.content.video_id in seen:
                    continue
                seen.add(item.content.video_id)
                instants.append(published)
            if past_start or not page.next_page_token:
                return instants
            page_token = page.next_page_token

    def daily_counts(
        self, account: Account, start: dt.date, end: dt.date, stats: CallStats
    ) -> dict[dt.date, int]:
        """Uploads per local day of the user in [start, end]."""
        lo, hi = local_day_bounds(start, end, account.tz)
        playlist = str((account.extra or {}).get("uploads_playlist_id") or "")
        if not playlist:
            playlist = self.uploads_playlist(account, stats)
        try:
            instants = self.uploads_between(account, playlist, lo, hi, stats)
        except NotFoundError:
            # A channel without any upload has no uploads playlist yet; or the id changed.
            fresh = self.uploads_playlist(account, stats)
            if fresh == playlist:
                return {}
            instants = self.uploads_between(account, fresh, lo, hi, stats)
        return count_local_days(instants, account.tz, start, end)
