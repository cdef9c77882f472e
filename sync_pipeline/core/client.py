"""The HTTP client base every provider resource extends: budget, tokens, limits, errors.

A provider subclass declares what differs: which budget windows a call spends, how its
headers report usage, how it says "rate limited" or "token expired", how it refreshes tokens,
and how its OAuth consent works. The request loop is written once here:

1. admit the call against the shared rate budget (waiting inline only for a near reset);
2. send it with the account's access token (refreshed under a row lock when it expires);
3. correct the budget from the provider's usage headers;
4. on "rate limited", mark the budget spent and wait or park until the provider's reset;
   on "token rejected", refresh once and retry; other errors are classified for the runner.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, NoReturn

import dagster as dg
import httpx
from pydantic import Field, PrivateAttr

from sync_pipeline.core.budget import Window, WindowUsage
from sync_pipeline.core.errors import (
    AuthRevokedError,
    NotFoundError,
    PermanentError,
    RateLimitedError,
    TransientError,
)
from sync_pipeline.core.http import CallStats, HttpSession, sent_at
from sync_pipeline.core.resources import AppDatabaseResource
from sync_pipeline.core.tokens import TokenSet

REFRESH_TIMEOUT_SECONDS = 10.0
MAX_LIMIT_WAITS = 3

Observation = tuple[Window, int, int | None]


class Limited:
    """A response saying the budget is spent: until when, and which window to mark spent."""

    def __init__(self, retry_at: float, reason: str, window: Window | None = None) -> None:
        self.retry_at = retry_at
        self.reason = reason
        self.window = window


def body_text(response: httpx.Response, limit: int = 300) -> str:
    """The start of a response body for error messages (never contains our tokens)."""
    return response.text[:limit].replace("\n", " ")


class HttpResource(dg.ConfigurableResource):
    """A resource talking HTTP to one host: the shared session, its timeouts and retries.

    Sources without OAuth or rate budgets (static catalog files) extend this directly;
    account-scoped APIs extend `ProviderClient`.
    """

    base_url: str = Field(description="API host; the real API unless pointed at a sandbox.")
    timeout_seconds: float = 30.0
    connect_timeout_seconds: float = 10.0
    transient_retries: int = Field(default=3, description="In-process retries of 5xx/timeouts.")

    _session: HttpSession | None = PrivateAttr(default=None)
    _lock: threading.Lock = PrivateAttr(default_factory=threading.Lock)

    def http(self) -> HttpSession:
        """The API client (timeouts, bounded retries of 5xx and network errors)."""
        with self._lock:
            if self._session is None:
                self._session = HttpSession(
                    self.base_url,
                    timeout=self.timeout_seconds,
                    connect_timeout=self.connect_timeout_seconds,
                    transient_retries=self.transient_retries,
                )
            return self._session

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        """Close the connection pools at the end of a run."""
        self.close()

    def close(self) -> None:
        """Close the connection pool (CLI use)."""
        with self._lock:
            if self._session is not None:
                self._session.close()
            self._session = None


class ProviderClient(HttpResource):
    """Base of the per-provider API resources (Strava, GitHub, YouTube, X, Instagram)."""

    PROVIDER: ClassVar[str] = ""

    app_db: AppDatabaseResource
    client_id: str = Field(description="OAuth client id of the application.")
    client_secret: str = Field(description="OAuth client secret of the application.")
    oauth_base_url: str = Field(
        default="", description="Consent/token host when it differs from the API host."
    )
    time_scale: int = Field(
        default=1,
        description="Only for sandboxes that compress time: windows and token lifetimes are "
        "divided by it. Keep 1 against the real API.",
    )
    max_inline_wait_seconds: float = Field(
        default=20.0,
        description="Wait in-process for a rate window reset at most this long; beyond it the "
        "work is parked and re-requested after the reset, freeing the run slot.",
    )
    token_refresh_margin_seconds: float = Field(
        default=300.0, description="Refresh access tokens this long before they expire."
    )

    _auth_session: HttpSession | None = PrivateAttr(default=None)

    # -- what a provider declares ------------------------------------------------------------
    def windows(self, account: str, method: str, path: str) -> list[Window]:
        """Budget windows a call spends (per app, per user token, per endpoint bucket)."""
        return []

    def cost(self, method: str, path: str) -> int:
        """Units a call costs (YouTube quota units, GitHub GraphQL points)."""
        return 1

    def observe(self, account: str, path: str, response: httpx.Response) -> list[Observation]:
        """Usage the provider reports in its headers: (window, used, limit)."""
        return []

    def limited(self, account: str, path: str, response: httpx.Response) -> Limited | None:
        """Whether this response says a limit is spent, and until when."""
        return None

    def token_rejected(self, response: httpx.Response) -> bool:
        """Whether the access token was rejected (expired/invalid): refresh and retry once."""
        return response.status_code == 401

    def refresh(self, tokens: TokenSet) -> TokenSet:
        """Trade stored tokens for fresh ones at the provider's token endpoint."""
        raise AuthRevokedError(f"{self.PROVIDER} tokens cannot be refreshed: reconnect.")

    def auth_headers(self, access_token: str) -> dict[str, str]:
        """Headers carrying the access token."""
        return {"Authorization": f"Bearer {access_token}"}

    def auth_params(self, access_token: str) -> dict[str, str]:
        """Query parameters carrying the access token (Instagram), if any."""
        return {}

    def describe(self, response: httpx.Response) -> str:
        """What an error response says, for messages (never contains our tokens)."""
        return body_text(response, 200)

    def error_for(self, response: httpx.Response, what: str) -> Exception:
        """Classify an unexpected status (4xx permanent, 404 not found, else transient)."""
        status = response.status_code
        message = f"{self.PROVIDER} {what}: HTTP {status} {body_text(response)}"
        if status == 404:
            return NotFoundError(message)
        if status in (400, 403, 409, 410, 422):
            return PermanentError(message)
        return TransientError(message)

    # -- plumbing ---------------------------------------------------------------------------
    def seconds(self, seconds: int) -> int:
        """A provider duration compressed by `time_scale` (1 against real APIs)."""
        return max(1, round(seconds / self.time_scale))

    def auth_http(self) -> HttpSession:
        """Token endpoint client: one attempt, short timeout (it runs under the token lock)."""
        with self._lock:
            if self._auth_session is None:
                self._auth_session = HttpSession(
                    self.oauth_base_url or self.base_url,
                    timeout=min(self.timeout_seconds, REFRESH_TIMEOUT_SECONDS),
                    connect_timeout=min(self.connect_timeout_seconds, REFRESH_TIMEOUT_SECONDS),
                    transient_retries=0,
                )
            return self._auth_session

    def oauth_url(self, path: str) -> str:
        """Absolute URL on the consent host."""
        return f"{(self.oauth_base_url or self.base_url).rstrip('/')}{path}"

    def close(self) -> None:
        """Close the connection pools (CLI use)."""
        with self._lock:
            for session in (self._session, self._auth_session):
                if session is not None:
                    session.close()
            self._session = self._auth_session = None

    def budget_usage(
        self, account: str = "", method: str = "GET", path: str = "/"
    ) -> list[WindowUsage]:
        """Used and left in the windows a call by `account` would spend (app-wide budgets
        need no account)."""
        return self.app_db.budget().usage(self.windows(account, method, path))

    def access_token(self, account: str, *, stale: str | None = None) -> str:
        """A valid access token for `account` (refreshed under the row lock if needed)."""
        return self.app_db.tokens(self.PROVIDER).access_token(
            account,
            self.refresh,
            margin=self.token_refresh_margin_seconds / self.time_scale,
            force=stale is not None,
            stale_token=stale,
        )

    def token_error(self, response: httpx.Response, grant: str) -> NoReturn:
        """Raise for a failed token request: rejected grants mean reconnect."""
        if response.status_code in (400, 401, 403):
            raise AuthRevokedError(
                f"{self.PROVIDER} rejected the {grant} grant (HTTP {response.status_code}: "
                f"{self.describe(response)}); the user must reconnect."
            )
        raise TransientError(f"{self.PROVIDER} token endpoint answered HTTP {response.status_code}")

    # -- the request loop -------------------------------------------------------------------
    def call(
        self,
        account: str,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        json: Any = None,
        headers: Mapping[str, str] | None = None,
        ok: Sequence[int] = (200,),
        stats: CallStats | None = None,
    ) -> httpx.Response:
        """Send an account-scoped API call; returns a response whose status is in `ok`.

        Raises RateLimitedError (park until `retry_at`), AuthRevokedError (reconnect),
        NotFoundError/PermanentError (do not retry) or TransientError.
        """
        budget = self.app_db.budget()
        windows = self.windows(account, method, path)
        cost = self.cost(method, path)

        def admit() -> None:
            if windows:
                waited = budget.acquire(windows, cost, max_wait=self.max_inline_wait_seconds)
                if stats is not None and waited:
                    stats.add(waited=waited)

        token = self.access_token(account)
        refreshed = False
        limit_waits = 0
        while True:
            response = self.http().request(
                method,
                path,
                params={**(params or {}), **self.auth_params(token)},
                json=json,
                headers={**(headers or {}), **self.auth_headers(token)},
                before_attempt=admit,
                stats=stats,
            )
            observations = self.observe(account, path, response)
            if observations:
                budget.observe(observations, now=sent_at(response))
            limit = self.limited(account, path, response)
            if limit is not None:
                if limit.window is not None:
                    budget.exhaust(limit.window, now=sent_at(response))
                wait = limit.retry_at - time.time()
                if wait > self.max_inline_wait_seconds or limit_waits >= MAX_LIMIT_WAITS:
                    raise RateLimitedError(
                        f"{self.PROVIDER}: {limit.reason}", retry_at=limit.retry_at
                    )
                limit_waits += 1
                if stats is not None:
                    stats.add(waited=max(wait, 0.0))
                # A real wait for the provider's reset, bounded by max_inline_wait_seconds.
                threading.Event().wait(max(wait, 0.0))
                continue
            if response.status_code in ok:
                return response
            if self.token_rejected(response):
                if refreshed:
                    raise AuthRevokedError(
                        f"{self.PROVIDER} rejected the token of account {account} after a "
                        f"refresh ({self.describe(response)}); the user must reconnect."
                    )
                token = self.access_token(account, stale=token)
                refreshed = True
                continue
            raise self.error_for(response, f"{method} {path}")
