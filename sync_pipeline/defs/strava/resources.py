"""Strava API v3 client resource: OAuth, shared rate budget, retries, typed results.

The request loop (budget admission, token refresh under the row lock, usage headers, 429s,
error classes) is `ProviderClient`'s; this class declares what is Strava's: its four rate
windows, its usage headers, its 429 and 401 bodies, its token endpoint and its endpoints.
"""

from __future__ import annotations

from typing import Any, ClassVar
from urllib.parse import urlencode

import httpx
from pydantic import Field

from sync_pipeline.core.budget import Window
from sync_pipeline.core.client import Limited, Observation, ProviderClient
from sync_pipeline.core.errors import NotFoundError, PermanentError, TransientError
from sync_pipeline.core.http import CallStats, sent_at
from sync_pipeline.core.tokens import TokenSet, refresh_token_of
from sync_pipeline.defs.strava.models import SummaryActivity, TokenGrant

PROVIDER = "strava"
MAX_PER_PAGE = 200
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


class StravaResource(ProviderClient):
    """Strava API v3 over HTTP; `base_url` points at the real API unless configured otherwise."""

    PROVIDER: ClassVar[str] = PROVIDER

    client_id: str = Field(description="Strava application client id.")
    client_secret: str = Field(description="Strava application client secret.")
    base_url: str = Field(default="https://www.strava.com", description="Strava host.")
    read_limit_15min: int = 100
    read_limit_daily: int = 1000
    overall_limit_15min: int = 200
    overall_limit_daily: int = 2000
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

    # -- rate windows and what Strava says about them ---------------------------------------
    def read_windows(self) -> list[Window]:
        """The windows a GET counts toward (read and overall, 15-minute and daily)."""
        short, day = self.seconds(900), self.seconds(86400)
        app = f"strava:{self.client_id}"
        return [
            Window(f"{app}:read:15min", short, self.read_limit_15min),
            Window(f"{app}:read:daily", day, self.read_limit_daily),
            Window(f"{app}:overall:15min", short, self.overall_limit_15min),
            Window(f"{app}:overall:daily", day, self.overall_limit_daily),
        ]

    def windows(self, account: str, method: str, path: str) -> list[Window]:
        """Strava limits the application: reads count toward all four windows, other calls
        toward the overall ones."""
        reads = self.read_windows()
        return reads if method in ("GET", "HEAD") else reads[2:]

    def observe(self, account: str, path: str, response: httpx.Response) -> list[Observation]:
        """`X-ReadRateLimit-*` and `X-RateLimit-*`: "15min,daily" usage and limits."""
        windows = self.read_windows()
        obs: list[Observation] = []
        for (w15, wday), usage_h, limit_h in (
            ((windows[0], windows[1]), "x-readratelimit-usage", "x-readratelimit-limit"),
            ((windows[2], windows[3]), "x-ratelimit-usage", "x-ratelimit-limit"),
        ):
            usage = _pair(response.headers.get(usage_h))
            if usage is None:
                continue
            limit = _pair(response.headers.get(limit_h))
            obs.append((w15, usage[0], limit[0] if limit else None))
            obs.append((wday, usage[1], limit[1] if limit else None))
        return obs

    def limited(self, account: str, path: str, response: httpx.Response) -> Limited | None:
        """A 429 spends the 15-minute window, or the day when the daily read count is used."""
        if response.status_code != 429:
            return None
        windows = self.read_windows()
        read = _pair(response.headers.get("x-readratelimit-usage"))
        read_limit = _pair(response.headers.get("x-readratelimit-limit"))
        daily_spent = read is not None and read_limit is not None and read[1] >= read_limit[1]
        blocked = windows[1] if daily_spent else windows[0]
        return Limited(
            retry_at=float(blocked.end(sent_at(response))),
            reason="Strava answered 429 Rate Limit Exceeded; waiting for the "
            f"{'daily' if daily_spent else '15-minute'} window to reset",
            window=blocked,
        )

    def token_rejected(self, response: httpx.Response) -> bool:
        """A 401 about the token (not a missing scope, which no refresh can fix)."""
        return response.status_code == 401 and not _missing_scope(response)

    def describe(self, response: httpx.Response) -> str:
        """Strava's error body: message and the resource.field codes."""
        return _message(response)

    def error_for(self, response: httpx.Response, what: str) -> Exception:
        """Missing scope, 403 and other 4xx are permanent; 404 not found; 5xx transient."""
        status = response.status_code
        if status == 401:
            return PermanentError(
                f"Strava says the athlete did not grant the scope needed for {what} "
                f"({_message(response)}); ask them to reconnect with activity:read_all."
            )
        if status == 404:
            return NotFoundError(f"Strava: {what} not found ({_message(response)})")
        if status == 403:
            return PermanentError(f"Strava refused {what}: {_message(response)}")
        if status >= 500:
            return TransientError(f"Strava answered HTTP {status} for {what}: {_message(response)}")
        return PermanentError(f"Strava answered HTTP {status} for {what}: {_message(response)}")

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
        return f"{self.oauth_url('/oauth/authorize')}?{urlencode(params)}"

    def _token_request(self, form: dict[str, str]) -> dict[str, Any]:
        response = self.auth_http().request(
            "POST",
            "/oauth/token",
            data={"client_id": self.client_id, "client_secret": self.client_secret, **form},
        )
        if response.status_code != 200:
            self.token_error(response, form["grant_type"])
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
        tokens = self.app_db.tokens(PROVIDER).get(str(athlete_id))
        if tokens is None:
            return
        self.http().request(
            "POST", "/oauth/deauthorize", data={"access_token": tokens.access_token}
        )

    # -- API calls --------------------------------------------------------------------------
    def get_json(
        self,
        athlete_id: int,
        path: str,
        params: dict[str, Any] | None = None,
        *,
        stats: CallStats | None = None,
    ) -> Any:
        """GET an athlete-scoped endpoint under /api/v3 (the request loop of ProviderClient)."""
        return self.call(
            str(athlete_id), "GET", f"/api/v3{path}", params=params, stats=stats
        ).json()

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


def _missing_scope(response: httpx.Response) -> bool:
    """Strava's 401 for a scope the athlete did not grant (`errors[].field` names it)."""
    errors = _json(response).get("errors") or []
    return any(isinstance(e, dict) and "permission" in str(e.get("field") or "") for e in errors)


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
