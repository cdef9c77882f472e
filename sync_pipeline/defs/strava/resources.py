"""Strava API v3 client resource: OAuth, shared rate budget, retries, typed results."""

from __future__ import annotations

import threading
import time
from typing import Any
from urllib.parse import urlencode

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
from sync_pipeline.core.tokens import TokenSet, refresh_token_of
from sync_pipeline.defs.strava.models import SummaryActivity, TokenGrant

PROVIDER = "strava"
MAX_PER_PAGE = 200
REFRESH_TIMEOUT_SECONDS = 10.0
STREAM_KEYS = ("latlng", "time", "distance", "altitude")


def _pair(value: str | None) -> tuple[int, int] | None:
    """Parse Strava's "15min,daily" header pairs."""
    if not value:
        return None
    try:
        short, daily = (int(p.strip()) for p in value.split(",")[:2])
    except ValueError:
        return None
    return short, daily


class StravaResource(dg.ConfigurableResource):
    """Strava API v3 over HTTP; `base_url` points at the real API unless configured otherwise."""

    app_db: AppDatabaseResource
    client_id: str = Field(description="Strava application client id.")
    client_secret: str = Field(description="Strava application client secret.")
    base_url: str = Field(default="https://www.strava.com", description="Strava host.")
    timeout_seconds: float = 30.0
    connect_timeout_seconds: float = 10.0
    transient_retries: int = Field(default=3, description="In-process retries of 5xx/timeouts.")
    read_limit_15min: int = 100
    read_limit_daily: int = 1000
    overall_limit_15min: int = 200
    overall_limit_daily: int = 2000
    time_scale: int = Field(
        default=1,
        description="Only for sandboxes that compress time: windows and token lifetimes are "
        "divided by it. Keep 1 against the real Strava API.",
    )
    max_inline_wait_seconds: float = Field(
        default=20.0,
        description="Wait in-process for a rate window reset at most this long; beyond it the "
        "work is parked and re-requested after the reset, freeing the run slot.",
    )
    token_refresh_margin_seconds: float = Field(
        default=600.0, description="Refresh access tokens this long before they expire."
    )
    streets_file: str = Field(
        default="",
        description="GeoJSON street network (OSM ways with node ids) for street matching; "
        "empty: streams are stored but not matched.",
    )
    match_radius_m: float = Field(
        default=25.0, gt=0, description="A street node counts as passed within this distance."
    )
    streams_per_sync: int = Field(
        default=10,
        ge=0,
        description="New activities an incremental sync finds (their push event was lost) whose "
        "streams it fetches and matches, newest first; push events process their activity at "
        "once. Bounded because each costs a read request.",
    )

    _session: HttpSession | None = PrivateAttr(default=None)
    _auth_session: HttpSession | None = PrivateAttr(default=None)
    _lock: threading.Lock = PrivateAttr(default_factory=threading.Lock)

    # -- plumbing ---------------------------------------------------------------------------
    def _http(self) -> HttpSession:
        with self._lock:
            if self._session is None:
                self._session = HttpSession(
                    self.base_url,
                    timeout=self.timeout_seconds,
                    connect_timeout=self.connect_timeout_seconds,
                    transient_retries=self.transient_retries,
                )
            return self._session

    def _auth_http(self) -> HttpSession:
        """Token endpoint client: one attempt, short timeout (it runs under the token lock)."""
        with self._lock:
            if self._auth_session is None:
                self._auth_session = HttpSession(
                    self.base_url,
                    timeout=min(self.timeout_seconds, REFRESH_TIMEOUT_SECONDS),
                    connect_timeout=min(self.connect_timeout_seconds, REFRESH_TIMEOUT_SECONDS),
                    transient_retries=0,
                )
            return self._auth_session

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        """Close the connection pool at the end of a run."""
        self.close()

    def close(self) -> None:
        """Close the connection pool (CLI use)."""
        with self._lock:
            for session in (self._session, self._auth_session):
                if session is not None:
                    session.close()
            self._session = self._auth_session = None

    def _seconds(self, seconds: int) -> int:
        return max(1, round(seconds / self.time_scale))

    def read_windows(self) -> list[Window]:
        """The windows a GET counts toward (read and overall, 15-minute and daily)."""
        short, day = self._seconds(900), self._seconds(86400)
        app = f"strava:{self.client_id}"
        return [
            Window(f"{app}:read:15min", short, self.read_limit_15min),
            Window(f"{app}:read:daily", day, self.read_limit_daily),
            Window(f"{app}:overall:15min", short, self.overall_limit_15min),
            Window(f"{app}:overall:daily", day, self.overall_limit_daily),
        ]

    def write_windows(self) -> list[Window]:
        """The windows a non-GET API call counts toward (overall only)."""
        return self.read_windows()[2:]

    def budget_usage(self) -> list[WindowUsage]:
        """Used and left in the current windows."""
        return self.app_db.budget().usage(self.read_windows())

    # -- OAuth ------------------------------------------------------------------------------
    def authorize_url(self, redirect_uri: str, *, state: str = "", **extra: str) -> str:
        """Strava's consent page for a new athlete (scope read + activity:read_all)."""
        params = {
            "client_id": self.client_id,
            "redirect_uri": redirect_uri,
            "response_type": "code",
            "approval_prompt": "auto",
            "scope": "read,activity:read_all",
            "state": state,
            **extra,
        }
        return f"{self.base_url.rstrip('/')}/oauth/authorize?{urlencode(params)}"

    def _token_request(self, form: dict[str, str]) -> dict[str, Any]:
        response = self._auth_http().request(
            "POST",
            "/oauth/token",
            data={"client_id": self.client_id, "client_secret": self.client_secret, **form},
        )
        if response.status_code in (400, 401, 403):
            raise AuthRevokedError(
                f"Strava rejected the {form['grant_type']} grant "
                f"(HTTP {response.status_code}: {_message(response)}); the athlete must reconnect."
            )
        if response.status_code != 200:
            raise TransientError(f"Strava token endpoint answered HTTP {response.status_code}")
        body: dict[str, Any] = response.json()
        return body

    def exchange_code(self, code: str, scopes: str = "") -> TokenGrant:
        """Trade an authorization code for tokens and the athlete's profile."""
        body = self._token_request({"grant_type": "authorization_code", "code": code})
        return TokenGrant(tokens=_token_set(body, scopes), athlete=body.get("athlete") or {})

    def refresh(self, tokens: TokenSet) -> TokenSet:
        """Refresh an access token; Strava rotates the refresh token."""
        refresh_token = refresh_token_of(tokens, "Strava")
        return _token_set(
            self._token_request({"grant_type": "refresh_token", "refresh_token": refresh_token}),
            "",
        )

    def deauthorize(self, athlete_id: int) -> None:
        """Revoke the app's access for an athlete (best effort if tokens are already gone)."""
        store = self.app_db.tokens(PROVIDER)
        tokens = store.get(str(athlete_id))
        if tokens is None:
            return
        self._http().request(
            "POST", "/oauth/deauthorize", data={"access_token": tokens.access_token}
        )

    # -- API calls --------------------------------------------------------------------------
    def _access_token(self, athlete_id: int, *, stale: str | None = None) -> str:
        return self.app_db.tokens(PROVIDER).access_token(
            str(athlete_id),
            self.refresh,
            margin=self.token_refresh_margin_seconds / self.time_scale,
            force=stale is not None,
            stale_token=stale,
        )

    def _observe(self, response: httpx.Response) -> None:
        windows = self.read_windows()
        obs: list[tuple[Window, int, int | None]] = []
        for (w15, wday), usage_h, limit_h in (
            ((windows[0], windows[1]), "x-readratelimit-usage", "x-readratelimit-limit"),
            ((windows[2], windows[3]), "x-ratelimit-usage", "x-ratelimit-limit"),
        ):
            usage, limit = (
                _pair(response.headers.get(usage_h)),
                _pair(response.headers.get(limit_h)),
            )
            if usage is None:
                continue
            obs.append((w15, usage[0], limit[0] if limit else None))
            obs.append((wday, usage[1], limit[1] if limit else None))
        if obs:
            # Headers describe usage when the request was sent; attribute them to that window.
            self.app_db.budget().observe(obs, now=sent_at(response))

    def _on_429(self, response: httpx.Response) -> RateLimitedError:
        windows = self.read_windows()
        budget = self.app_db.budget()
        read, read_limit = (
            _pair(response.headers.get("x-readratelimit-usage")),
            _pair(response.headers.get("x-readratelimit-limit")),
        )
        # Daily spent → wait for midnight; otherwise the 15-minute window.
        daily_spent = read is not None and read_limit is not None and read[1] >= read_limit[1]
        blocked = windows[1] if daily_spent else windows[0]
        budget.exhaust(blocked)
        now = time.time()
        return RateLimitedError(
            "Strava answered 429 Rate Limit Exceeded; waiting for the "
            f"{'daily' if daily_spent else '15-minute'} window to reset",
            retry_at=float(blocked.end(now)),
        )

    def get_json(
        self,
        athlete_id: int,
        path: str,
        params: dict[str, Any] | None = None,
        *,
        stats: CallStats | None = None,
    ) -> Any:
        """GET an athlete-scoped endpoint: budget, token refresh, error classification."""
        budget = self.app_db.budget()
        windows = self.read_windows()

        def admit() -> None:
            waited = budget.acquire(windows, 1, max_wait=self.max_inline_wait_seconds)
            if stats is not None and waited:
                stats.add(waited=waited)

        token = self._access_token(athlete_id)
        for auth_attempt in range(2):
            response = self._http().request(
                "GET",
                f"/api/v3{path}",
                params=params,
                headers={"Authorization": f"Bearer {token}"},
                before_attempt=admit,
                stats=stats,
            )
            self._observe(response)
            status = response.status_code
            if status == 200:
                return response.json()
            if status == 401:
                body = _json(response)
                fields = {e.get("field") for e in body.get("errors", []) if isinstance(e, dict)}
                if any(f and "permission" in f for f in fields):
                    raise PermanentError(
                        f"Strava says the athlete did not grant the scope needed for {path} "
                        f"({_message(response)}); ask them to reconnect with activity:read_all."
                    )
                if auth_attempt == 0:
                    token = self._access_token(athlete_id, stale=token)
                    continue
                raise AuthRevokedError(
                    f"Strava rejected athlete {athlete_id}'s token after a refresh "
                    f"({_message(response)}); the athlete must reconnect."
                )
            if status == 404:
                raise NotFoundError(f"Strava: {path} not found ({_message(response)})")
            if status == 429:
                raise self._on_429(response)
            if status == 403:
                raise PermanentError(f"Strava refused {path}: {_message(response)}")
            raise PermanentError(f"Strava answered HTTP {status} for {path}: {_message(response)}")
        raise AssertionError("unreachable")

    def list_activities(
        self,
        athlete_id: int,
        *,
        before: int | None = None,
        after: int | None = None,
        page: int = 1,
        per_page: int = MAX_PER_PAGE,
        stats: CallStats | None = None,
    ) -> list[SummaryActivity]:
        """One page of GET /athlete/activities (newest first)."""
        params: dict[str, Any] = {"page": page, "per_page": per_page}
        if before is not None:
            params["before"] = before
        if after is not None:
            params["after"] = after
        items = self.get_json(athlete_id, "/athlete/activities", params, stats=stats)
        return [SummaryActivity.from_api(d) for d in items]

    def get_activity(
        self, athlete_id: int, activity_id: int, *, stats: CallStats | None = None
    ) -> SummaryActivity:
        """GET /activities/{id} (DetailedActivity; typed columns plus the full payload)."""
        return SummaryActivity.from_api(
            self.get_json(athlete_id, f"/activities/{activity_id}", stats=stats)
        )

    def get_streams(
        self, athlete_id: int, activity_id: int, *, stats: CallStats | None = None
    ) -> dict[str, list[Any]]:
        """GET /activities/{id}/streams for latlng, time, distance, altitude (keyed by type)."""
        body = self.get_json(
            athlete_id,
            f"/activities/{activity_id}/streams",
            {"keys": ",".join(STREAM_KEYS), "key_by_type": "true"},
            stats=stats,
        )
        if not isinstance(body, dict):
            return {}
        return {
            k: list(v.get("data") or [])
            for k, v in body.items()
            if k in STREAM_KEYS and isinstance(v, dict)
        }

    def get_athlete(self, athlete_id: int, *, stats: CallStats | None = None) -> dict[str, Any]:
        """GET /athlete with the athlete's own token."""
        result: dict[str, Any] = self.get_json(athlete_id, "/athlete", stats=stats)
        return result


def _json(response: httpx.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def _message(response: httpx.Response) -> str:
    body = _json(response)
    errors = body.get("errors") or []
    detail = ", ".join(
        f"{e.get('resource')}.{e.get('field')} {e.get('code')}"
        for e in errors
        if isinstance(e, dict)
    )
    return f"{body.get('message', response.reason_phrase)}" + (f" [{detail}]" if detail else "")


def _token_set(body: dict[str, Any], scopes: str) -> TokenSet:
    return TokenSet(
        access_token=str(body["access_token"]),
        refresh_token=body.get("refresh_token"),
        expires_at=int(body["expires_at"]) if body.get("expires_at") else None,
        scopes=scopes,
    )
