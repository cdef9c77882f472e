"""In-memory state of the Strava sandbox: data, tokens, clocks, rate limits and faults."""

from __future__ import annotations

import logging
import secrets
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import httpx

from sync_pipeline.sandbox.common import Clock as Clock  # moved; still importable here
from sync_pipeline.sandbox.common import (
    Fault,
    RateDecision,
    SandboxApiError,
    SandboxState,
    ScaledConfig,
    WindowCounter,
)
from sync_pipeline.sandbox.common import ManualClock as ManualClock  # moved; still importable here
from sync_pipeline.sandbox.strava import data

logger = logging.getLogger(__name__)

ACCESS_TOKEN_SECONDS = 21600.0
AUTH_CODE_SECONDS = 600.0
SAME_TOKEN_MIN_REMAINING = 3600.0
WINDOW_15MIN = 900.0
WINDOW_DAILY = 86400.0
#: Strava's scopes in its canonical order (the order ``scope`` is echoed in).
SCOPE_ORDER = (
    "read",
    "read_all",
    "profile:read_all",
    "profile:write",
    "activity:read",
    "activity:read_all",
    "activity:write",
)
KNOWN_SCOPES = frozenset(SCOPE_ORDER)
FAULT_KINDS = frozenset({"5xx", "timeout", "slow", "429", "revoked", "deleted"})
MAX_PER_PAGE = 200
DEFAULT_PER_PAGE = 30
PUSH_ACK_SECONDS = 2.0
PUSH_MAX_ATTEMPTS = 3
PUSH_RETRY_BACKOFF = 1.0


def error_body(message: str, resource: str, field_name: str, code: str) -> dict[str, Any]:
    """Strava's error envelope."""
    return {
        "message": message,
        "errors": [{"resource": resource, "field": field_name, "code": code}],
    }


def auth_error() -> StravaApiError:
    """401 for a missing, invalid, expired or revoked access token."""
    return StravaApiError(
        401, error_body("Authorization Error", "Athlete", "access_token", "invalid")
    )


def not_found(resource: str = "Activity", field_name: str = "id") -> StravaApiError:
    """Strava's 404."""
    return StravaApiError(404, error_body("Record Not Found", resource, field_name, "invalid"))


def rate_limit_body() -> dict[str, Any]:
    """Body of a 429."""
    return error_body("Rate Limit Exceeded", "Application", "rate limit", "exceeded")


class StravaApiError(SandboxApiError):
    """An HTTP error with a Strava-style JSON body."""

    def __init__(self, status: int, body: dict[str, Any]) -> None:
        super().__init__(status, body)


@dataclass
class StravaSandboxConfig(ScaledConfig):
    """Settings of one sandbox instance; durations are divided by ``time_scale``.

    ``activity_counts`` maps athlete indexes (0-based, or athlete ids) to exact counts.
    ``anchor_epoch`` pins the newest-data anchor (default: creation time).
    ``ascending_when_after`` returns oldest-first when ``after`` is given (off by default).
    """

    seed: int = 42
    athletes: int = 5
    activity_counts: dict[int, int] | None = None
    client_id: str = "12345"
    client_secret: str = "sandbox-secret"
    time_scale: float = 1.0
    read_limit_15min: int = 100
    read_limit_daily: int = 1000
    overall_limit_15min: int = 200
    overall_limit_daily: int = 2000
    rate_limits_enabled: bool = True
    first_athlete_id: int = 1001
    anchor_epoch: float | None = None
    callback_domain: str | None = None
    ascending_when_after: bool = False
    # Push subscriptions: Strava wants a 200 within ``push_ack_timeout`` seconds (real time,
    # not scaled) and makes ``push_max_attempts`` attempts in all; redelivery n waits
    # ``push_retry_backoff * 2**(n-1)`` Strava seconds (scaled).
    push_ack_timeout: float = PUSH_ACK_SECONDS
    push_max_attempts: int = PUSH_MAX_ATTEMPTS
    push_retry_backoff: float = PUSH_RETRY_BACKOFF


@dataclass
class ActivityRecord:
    """A stored activity: id, start time and user edits; the rest is generated."""

    id: int
    athlete_id: int
    start_ts: int
    overrides: dict[str, Any] = field(default_factory=dict)
    deleted: bool = False
    spec: data.ActivitySpec | None = None


@dataclass
class AthleteRecord:
    """A stored athlete with its activities in ascending start order."""

    profile: data.AthleteProfile
    activities: list[ActivityRecord]
    next_index: int


@dataclass
class AccessToken:
    """An issued access token."""

    token: str
    athlete_id: int
    scopes: frozenset[str]
    expires_at: int
    revoked: bool = False


@dataclass
class Grant:
    """The application's authorization by one athlete."""

    athlete_id: int
    scopes: frozenset[str]
    refresh_token: str
    access_token: str


@dataclass
class AuthCode:
    """A one-time authorization code."""

    code: str
    athlete_id: int
    scopes: frozenset[str]
    expires_at: float
    used: bool = False


@dataclass
class PushSubscription:
    """The application's webhook subscription (Strava allows one per application)."""

    id: int
    callback_url: str
    verify_token: str
    created_at: float
    updated_at: float


@dataclass
class PushDelivery:
    """One event on its way to a subscription's callback."""

    subscription_id: int
    event: dict[str, Any]
    attempts: int = 0
    due: float = 0.0  # time.monotonic() of the next attempt


def _scope_set(raw: str | None) -> frozenset[str]:
    parts = {p.strip() for p in (raw or "").replace(" ", ",").split(",") if p.strip()}
    unknown = parts - KNOWN_SCOPES
    if unknown:
        raise StravaApiError(400, error_body("Bad Request", "Authorize", "scope", "invalid"))
    return frozenset(parts | {"read"})


def scope_string(scopes: frozenset[str]) -> str:
    """Comma-separated scopes in Strava's canonical order."""
    return ",".join(s for s in SCOPE_ORDER if s in scopes)


class StravaSandboxState(SandboxState[StravaSandboxConfig]):
    """Everything the sandbox knows; all public methods are thread-safe."""

    namespace = "strava"
    config_type = StravaSandboxConfig
    fault_kinds = FAULT_KINDS

    def setup(self) -> None:
        """Athletes with their activities, tokens, windows and push delivery."""
        self.windows = WindowCounter()
        self._athletes: dict[int, AthleteRecord] = {}
        self._activities: dict[int, ActivityRecord] = {}
        self._access: dict[str, AccessToken] = {}
        self._refresh: dict[str, int] = {}
        self._grants: dict[int, Grant] = {}
        self._codes: dict[str, AuthCode] = {}
        self._push_subscription: PushSubscription | None = None
        self._push_seq = 0
        self._push_cond = threading.Condition()  # guards the delivery queue; taken after _lock
        self._push_queue: list[PushDelivery] = []
        self._push_in_flight = 0
        self._push_worker: threading.Thread | None = None
        self._push_closed = False
        self._push_stats: Counter[str] = Counter()
        counts = data.default_activity_counts(self.config.seed, self.config.athletes)
        explicit = self.config.activity_counts or {}
        for index in range(self.config.athletes):
            athlete_id = self.config.first_athlete_id + index
            count = explicit.get(index, explicit.get(athlete_id, counts[index]))
            self._create_athlete(athlete_id, count)

    # ----------------------------------------------------------------- data
    def _create_athlete(self, athlete_id: int, count: int) -> None:
        if count < 0:
            raise ValueError("activity count must be >= 0")
        profile = data.make_athlete(self.config.seed, athlete_id, self.anchor)
        starts = data.generate_start_times(
            self.config.seed, athlete_id, count, self.anchor, profile.city
        )
        record = AthleteRecord(profile, [], 1)
        self._athletes[athlete_id] = record
        for start in starts:
            self._append_activity(record, start)

    def _append_activity(self, record: AthleteRecord, start_ts: int) -> ActivityRecord:
        athlete_id = record.profile.id
        activity = ActivityRecord(athlete_id * 10_000_000 + record.next_index, athlete_id, start_ts)
        record.next_index += 1
        record.activities.append(activity)
        self._activities[activity.id] = activity
        return activity

    def _spec(self, activity: ActivityRecord) -> data.ActivitySpec:
        if activity.spec is None:
            athlete = self._athletes[activity.athlete_id].profile
            activity.spec = data.make_activity(
                self.config.seed, athlete, activity.id, activity.start_ts
            )
        return activity.spec

    def _athlete(self, athlete_id: int) -> AthleteRecord:
        record = self._athletes.get(athlete_id)
        if record is None:
            raise not_found("Athlete", "id")
        return record

    def _live_activity(self, activity_id: int) -> ActivityRecord:
        activity = self._activities.get(activity_id)
        if activity is None or activity.deleted:
            raise not_found()
        return activity

    def athlete_ids(self) -> list[int]:
        """All athlete ids, ascending."""
        with self._lock:
            return sorted(self._athletes)

    def add_athlete(self, activity_count: int = 0) -> int:
        """Create an athlete with exactly ``activity_count`` historical activities."""
        with self._lock:
            athlete_id = max(self._athletes, default=self.config.first_athlete_id - 1) + 1
            self._create_athlete(athlete_id, activity_count)
            return athlete_id

    def list_athletes(self) -> list[dict[str, Any]]:
        """Control view of all athletes."""
        with self._lock:
            return [
                {
                    "id": r.profile.id,
                    "firstname": r.profile.firstname,
                    "lastname": r.profile.lastname,
                    "activity_count": sum(1 for a in r.activities if not a.deleted),
                    "authorized": r.profile.id in self._grants,
                }
                for _, r in sorted(self._athletes.items())
            ]

    def activity_ids(self, athlete_id: int, include_private: bool = True) -> list[int]:
        """Ids of an athlete's live activities, newest first."""
        with self._lock:
            record = self._athlete(athlete_id)
            return [
                a.id
                for a in reversed(record.activities)
                if not a.deleted and (include_private or not self._is_private(a))
            ]

    def activity_start(self, activity_id: int) -> int:
        """Start time (epoch seconds) of a live activity."""
        with self._lock:
            return self._live_activity(activity_id).start_ts

    def add_activities(self, athlete_id: int, count: int = 1) -> list[int]:
        """Add ``count`` new activities dated now, newer than all existing ones."""
        if count < 0:
            raise ValueError("count must be >= 0")
        with self._lock:
            record = self._athlete(athlete_id)
            now = int(self.time())
            starts = [now - (count - 1 - k) * 60 for k in range(count)]
            last = record.activities[-1].start_ts if record.activities else None
            if starts and last is not None and starts[0] <= last:
                shift = last + 1 - starts[0]
                starts = [s + shift for s in starts]
            ids = [self._append_activity(record, s).id for s in starts]
            for activity_id in ids:
                self._emit_push("activity", activity_id, "create", athlete_id)
            return ids

    def update_activity(
        self, activity_id: int, name: str | None = None, private: bool | None = None, **fields: Any
    ) -> dict[str, Any]:
        """Edit an activity (name, private, type, description, commute, trainer, hide_from_home).

        A changed title, type or privacy is pushed as an ``update`` event (privacy only to
        grants with ``activity:read_all``, as Strava does).
        """
        allowed = {"description", "commute", "trainer", "hide_from_home", "type"}
        extra = set(fields) - allowed
        if extra:
            raise ValueError(f"unsupported fields: {sorted(extra)}")
        with self._lock:
            activity = self._live_activity(activity_id)
            before = self._summary(activity)
            if name is not None:
                activity.overrides["name"] = name
            if private is not None:
                activity.overrides["private"] = bool(private)
            activity.overrides.update({k: v for k, v in fields.items() if v is not None})
            after = self._summary(activity)
            updates: dict[str, str] = {}
            if after["name"] != before["name"]:
                updates["title"] = str(after["name"])
            if after["type"] != before["type"]:
                updates["type"] = str(after["type"])
            if after["private"] != before["private"] and self._grant_has(
                activity.athlete_id, "activity:read_all"
            ):
                updates["private"] = "true" if after["private"] else "false"
            if updates:
                self._emit_push("activity", activity_id, "update", activity.athlete_id, updates)
            return after

    def delete_activity(self, activity_id: int) -> None:
        """Delete an activity; later reads answer 404."""
        with self._lock:
            activity = self._live_activity(activity_id)
            activity.deleted = True
            self._emit_push("activity", activity_id, "delete", activity.athlete_id)

    def _summary(self, activity: ActivityRecord) -> dict[str, Any]:
        return _with_type(data.summary_dict(self._spec(activity), activity.overrides), activity)

    def _is_private(self, activity: ActivityRecord) -> bool:
        return bool(activity.overrides.get("private", self._spec(activity).private))

    # -------------------------------------------------------------- API reads
    def athlete_json(self, athlete_id: int, detailed: bool = False) -> dict[str, Any]:
        """SummaryAthlete, or DetailedAthlete when ``detailed``."""
        with self._lock:
            p = self._athlete(athlete_id).profile
            grant_time = self.anchor
        pic = f"https://dgalywyr863hv.cloudfront.net/pictures/athletes/{p.id}/{p.id}"
        out: dict[str, Any] = {
            "id": p.id,
            "username": p.username,
            "resource_state": 3 if detailed else 2,
            "firstname": p.firstname,
            "lastname": p.lastname,
            "bio": "",
            "city": p.city.name,
            "state": p.city.state,
            "country": p.city.country,
            "sex": p.sex,
            "premium": p.premium,
            "summit": p.premium,
            "created_at": data.iso_z(p.created_ts),
            "updated_at": data.iso_z(grant_time),
            "badge_type_id": 1 if p.premium else 0,
            "weight": p.weight,
            "profile_medium": f"{pic}/2/medium.jpg",
            "profile": f"{pic}/2/large.jpg",
            "friend": None,
            "follower": None,
        }
        if detailed:
            out.update(
                {
                    "blocked": False,
                    "can_follow": True,
                    "follower_count": p.follower_count,
                    "friend_count": p.friend_count,
                    "mutual_friend_count": 0,
                    "athlete_type": 0,
                    "date_preference": "%m/%d/%Y",
                    "measurement_preference": "meters",
                    "clubs": [],
                    "postable_clubs_count": 0,
                    "ftp": p.ftp,
                    "bikes": [
                        {
                            "id": g.id,
                            "primary": g.primary,
                            "name": g.name,
                            "resource_state": 2,
                            "distance": g.distance,
                        }
                        for g in p.bikes
                    ],
                    "shoes": [
                        {
                            "id": g.id,
                            "primary": g.primary,
                            "name": g.name,
                            "resource_state": 2,
                            "distance": g.distance,
                        }
                        for g in p.shoes
                    ],
                }
            )
        return out

    def list_activities(
        self,
        token: AccessToken,
        before: int | None = None,
        after: int | None = None,
        page: int = 1,
        per_page: int = DEFAULT_PER_PAGE,
    ) -> list[dict[str, Any]]:
        """``GET /athlete/activities`` for the token's athlete."""
        require_scope(token, "activity:read")
        page = max(1, page)
        per_page = DEFAULT_PER_PAGE if per_page < 1 else min(per_page, MAX_PER_PAGE)
        show_private = "activity:read_all" in token.scopes
        with self._lock:
            record = self._athlete(token.athlete_id)
            rows = [
                a
                for a in record.activities
                if not a.deleted
                and (before is None or a.start_ts < before)
                and (after is None or a.start_ts > after)
                and (show_private or not self._is_private(a))
            ]
            if not (self.config.ascending_when_after and after is not None):
                rows.reverse()
            chosen = rows[(page - 1) * per_page : page * per_page]
            return [self._summary(a) for a in chosen]

    def _visible_activity(self, token: AccessToken, activity_id: int) -> ActivityRecord:
        require_scope(token, "activity:read")
        activity = self._live_activity(activity_id)
        if activity.athlete_id != token.athlete_id:
            raise not_found()
        if self._is_private(activity) and "activity:read_all" not in token.scopes:
            raise not_found()
        return activity

    def get_activity(self, token: AccessToken, activity_id: int) -> dict[str, Any]:
        """``GET /activities/{id}``: DetailedActivity."""
        with self._lock:
            activity = self._visible_activity(token, activity_id)
            spec = self._spec(activity)
            overrides = dict(activity.overrides)
            athlete = self._athletes[activity.athlete_id].profile
        return _with_type(data.detail_dict(spec, overrides, athlete), overrides)

    def get_streams(
        self, token: AccessToken, activity_id: int, keys: list[str] | None
    ) -> dict[str, list[Any]]:
        """Available requested streams (plus ``distance``) of an activity."""
        with self._lock:
            spec = self._spec(self._visible_activity(token, activity_id))
        track = data.build_track(spec)
        if track is None:
            return {}
        streams = data.stream_data(track)
        wanted = [k for k in (keys or list(data.STREAM_KEYS)) if k in streams]
        if "distance" not in wanted:
            wanted.append("distance")
        return {k: streams[k] for k in dict.fromkeys(wanted)}

    def put_activity(
        self, token: AccessToken, activity_id: int, changes: dict[str, Any]
    ) -> dict[str, Any]:
        """``PUT /activities/{id}`` (UpdatableActivity; needs activity:write)."""
        require_scope(token, "activity:write")
        with self._lock:
            self._visible_activity(token, activity_id)
            fields = {
                k: changes[k]
                for k in ("description", "commute", "trainer", "hide_from_home", "type")
                if k in changes
            }
            self.update_activity(
                activity_id, name=changes.get("name"), private=changes.get("private"), **fields
            )
        return self.get_activity(token, activity_id)

    # ------------------------------------------------------------------ OAuth
    def check_client(self, client_id: str | None) -> None:
        """Raise 400 unless ``client_id`` is this application's."""
        if client_id != self.config.client_id:
            raise StravaApiError(
                400, error_body("Bad Request", "Application", "client_id", "invalid")
            )

    def authorize(
        self,
        client_id: str | None,
        redirect_uri: str | None,
        response_type: str | None,
        scope: str | None,
        athlete_id: int | None = None,
    ) -> tuple[str, frozenset[str]]:
        """Consent step: validate and return ``(code, accepted_scopes)``."""
        self.check_client(client_id)
        if not redirect_uri:
            raise StravaApiError(
                400, error_body("Bad Request", "Application", "redirect_uri", "invalid")
            )
        host = urlsplit(redirect_uri).hostname or ""
        domain = self.config.callback_domain
        if (
            domain
            and host not in ("localhost", "127.0.0.1")
            and not (host == domain or host.endswith("." + domain))
        ):
            raise StravaApiError(
                400, error_body("Bad Request", "Application", "redirect_uri", "invalid")
            )
        if response_type != "code":
            raise StravaApiError(
                400, error_body("Bad Request", "Application", "response_type", "invalid")
            )
        scopes = _scope_set(scope)
        with self._lock:
            if athlete_id is None:
                pending = [a for a in sorted(self._athletes) if a not in self._grants]
                athlete_id = pending[0] if pending else min(self._athletes)
            elif athlete_id not in self._athletes:
                raise StravaApiError(
                    400, error_body("Bad Request", "Athlete", "sandbox_athlete_id", "invalid")
                )
            code = secrets.token_hex(20)
            self._codes[code] = AuthCode(
                code, athlete_id, scopes, self.time() + self.config.scaled(AUTH_CODE_SECONDS)
            )
            return code, scopes

    def _new_access(self, athlete_id: int, scopes: frozenset[str]) -> AccessToken:
        lifetime = self.config.scaled(ACCESS_TOKEN_SECONDS)
        token = AccessToken(secrets.token_hex(20), athlete_id, scopes, int(self.time() + lifetime))
        self._access[token.token] = token
        return token

    def _token_response(self, access: AccessToken, refresh: str) -> dict[str, Any]:
        return {
            "token_type": "Bearer",
            "expires_at": access.expires_at,
            "expires_in": max(0, int(access.expires_at - self.time())),
            "refresh_token": refresh,
            "access_token": access.token,
        }

    def check_credentials(self, client_id: str | None, client_secret: str | None) -> None:
        """Raise 400 for an unknown client id, 401 for a wrong secret."""
        self.check_client(client_id)
        if client_secret != self.config.client_secret:
            raise StravaApiError(
                401, error_body("Bad Request", "Application", "client_secret", "invalid")
            )

    def exchange_code(
        self, client_id: str | None, client_secret: str | None, code: str | None
    ) -> dict[str, Any]:
        """``grant_type=authorization_code``."""
        with self._lock:
            self.check_credentials(client_id, client_secret)
            auth = self._codes.get(code or "")
            if auth is None or auth.used or self.time() >= auth.expires_at:
                raise StravaApiError(
                    400, error_body("Bad Request", "AuthorizationCode", "code", "invalid")
                )
            auth.used = True
            result = self._issue_grant(auth.athlete_id, auth.scopes)
        result["athlete"] = self.athlete_json(auth.athlete_id)
        return result

    def _issue_grant(self, athlete_id: int, scopes: frozenset[str]) -> dict[str, Any]:
        old = self._grants.get(athlete_id)
        if old is not None:
            self._refresh.pop(old.refresh_token, None)
        access = self._new_access(athlete_id, scopes)
        refresh = secrets.token_hex(20)
        self._refresh[refresh] = athlete_id
        self._grants[athlete_id] = Grant(athlete_id, scopes, refresh, access.token)
        return self._token_response(access, refresh)

    def issue_tokens(
        self, athlete_id: int, scope: str = "read,activity:read_all"
    ) -> dict[str, Any]:
        """Shortcut for tests: authorize + exchange in one call (token response)."""
        with self._lock:
            self._athlete(athlete_id)
            result = self._issue_grant(athlete_id, _scope_set(scope))
        result["athlete"] = self.athlete_json(athlete_id)
        return result

    def refresh(
        self, client_id: str | None, client_secret: str | None, refresh_token: str | None
    ) -> dict[str, Any]:
        """``grant_type=refresh_token``: rotate the refresh token."""
        with self._lock:
            self.check_credentials(client_id, client_secret)
            athlete_id = self._refresh.pop(refresh_token or "", None)
            if athlete_id is None:
                raise StravaApiError(
                    400, error_body("Bad Request", "RefreshToken", "refresh_token", "invalid")
                )
            grant = self._grants[athlete_id]
            current = self._access.get(grant.access_token)
            keep = (
                current is not None
                and not current.revoked
                and current.expires_at - self.time() > self.config.scaled(SAME_TOKEN_MIN_REMAINING)
            )
            access = (
                current
                if keep and current is not None
                else self._new_access(athlete_id, grant.scopes)
            )
            new_refresh = secrets.token_hex(20)
            self._refresh[new_refresh] = athlete_id
            grant.refresh_token = new_refresh
            grant.access_token = access.token
            self._counters["refreshes"] += 1
            return self._token_response(access, new_refresh)

    def revoke(self, athlete_id: int) -> int:
        """Revoke every token of the athlete for this app; returns tokens revoked."""
        with self._lock:
            self._athlete(athlete_id)
            if athlete_id in self._grants:
                self._emit_push(
                    "athlete", athlete_id, "update", athlete_id, {"authorized": "false"}
                )
            grant = self._grants.pop(athlete_id, None)
            if grant is not None:
                self._refresh.pop(grant.refresh_token, None)
            revoked = 0
            for token in self._access.values():
                if token.athlete_id == athlete_id and not token.revoked:
                    token.revoked = True
                    revoked += 1
            return revoked

    def deauthorize(self, access_token: str | None) -> dict[str, Any]:
        """``POST /oauth/deauthorize``."""
        token = self.authenticate(access_token)
        self.revoke(token.athlete_id)
        return {"access_token": token.token}

    def authenticate(self, access_token: str | None) -> AccessToken:
        """Return the valid token or raise a 401."""
        with self._lock:
            token = self._access.get(access_token or "")
            if token is None or token.revoked or self.time() >= token.expires_at:
                raise auth_error()
            return token

    def athlete_for_token(self, access_token: str | None) -> int | None:
        """Athlete id behind a token (even expired), for fault matching."""
        with self._lock:
            token = self._access.get(access_token or "")
            return None if token is None else token.athlete_id

    def athlete_for_refresh_token(self, refresh_token: str | None) -> int | None:
        """Athlete id behind a current refresh token."""
        with self._lock:
            return self._refresh.get(refresh_token or "")

    def athlete_for_code(self, code: str | None) -> int | None:
        """Athlete id behind an authorization code."""
        with self._lock:
            auth = self._codes.get(code or "")
            return None if auth is None else auth.athlete_id

    # ------------------------------------------------------------ rate limits
    def _bump(self, name: str, window: float, now: float) -> int:
        length = self.config.scaled(window)
        return self.windows.add(name, WindowCounter.aligned_start(now, length))

    def _peek(self, name: str, window: float, now: float) -> int:
        length = self.config.scaled(window)
        return self.windows.peek(name, WindowCounter.aligned_start(now, length))

    def usage(self) -> dict[str, int]:
        """Current usage in the running windows."""
        with self._lock:
            now = self.time()
            return {
                "overall_15min": self._peek("overall_15min", WINDOW_15MIN, now),
                "overall_daily": self._peek("overall_daily", WINDOW_DAILY, now),
                "read_15min": self._peek("read_15min", WINDOW_15MIN, now),
                "read_daily": self._peek("read_daily", WINDOW_DAILY, now),
            }

    def rate_headers(self) -> dict[str, str]:
        """The four X-RateLimit headers for the current usage."""
        u = self.usage()
        c = self.config
        return {
            "X-RateLimit-Limit": f"{c.overall_limit_15min},{c.overall_limit_daily}",
            "X-RateLimit-Usage": f"{u['overall_15min']},{u['overall_daily']}",
            "X-ReadRateLimit-Limit": f"{c.read_limit_15min},{c.read_limit_daily}",
            "X-ReadRateLimit-Usage": f"{u['read_15min']},{u['read_daily']}",
        }

    def count_api_request(self, is_read: bool) -> RateDecision:
        """Count one /api/v3 request and decide whether it is over a limit."""
        c = self.config
        with self._lock:
            now = self.time()
            o15 = self._bump("overall_15min", WINDOW_15MIN, now)
            oday = self._bump("overall_daily", WINDOW_DAILY, now)
            over = o15 > c.overall_limit_15min or oday > c.overall_limit_daily
            if is_read:
                r15 = self._bump("read_15min", WINDOW_15MIN, now)
                rday = self._bump("read_daily", WINDOW_DAILY, now)
                over = over or r15 > c.read_limit_15min or rday > c.read_limit_daily
            return RateDecision(self.rate_headers(), over and c.rate_limits_enabled)

    def reset_usage(self) -> None:
        """Forget all rate-limit usage."""
        self.windows.reset()

    # ----------------------------------------------------------------- faults
    def inject_fault(
        self,
        kind: str,
        count: int = 1,
        path_contains: str | None = None,
        athlete_id: int | None = None,
        delay: float = 0.0,
        status: int | None = None,
        activity_id: int | None = None,
    ) -> int | None:
        """Inject a fault; ``revoked``/``deleted`` apply at once, others fire ``count`` times."""
        if kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {kind!r}")
        if kind == "revoked":
            if athlete_id is None:
                raise ValueError("revoked needs athlete_id")
            self.revoke(athlete_id)
            return None
        if kind == "deleted":
            if activity_id is None:
                raise ValueError("deleted needs activity_id")
            self.delete_activity(activity_id)
            return None
        return self.faults.inject(kind, count, path_contains, athlete_id, delay, status)

    def take_fault(self, path: str, athlete_id: int | None) -> Fault | None:
        """Consume one firing of the first fault matching this request."""
        return self.faults.take(path, athlete_id)

    def list_faults(self) -> list[dict[str, Any]]:
        """Pending faults (``athlete_id`` names the athlete a fault is limited to)."""
        out = []
        for fault in self.faults.list():
            principal = fault.pop("principal")
            athlete = int(principal) if principal and principal.isdigit() else principal
            out.append({**fault, "athlete_id": athlete})
        return out

    def clear_faults(self) -> int:
        """Drop all pending faults; returns how many."""
        return self.faults.clear()

    def list_control_faults(self) -> list[dict[str, Any]]:
        """``GET /_sandbox/faults``."""
        return self.list_faults()

    def inject_control_fault(self, body: dict[str, Any]) -> Any:
        """``POST /_sandbox/faults``: the shared fields plus ``athlete_id`` and ``activity_id``."""
        return self.inject_fault(
            str(body["kind"]),
            count=int(body.get("count", 1)),
            path_contains=body.get("path_contains"),
            athlete_id=body.get("athlete_id"),
            delay=float(body.get("delay", 0.0)),
            status=body.get("status"),
            activity_id=body.get("activity_id"),
        )

    # ------------------------------------------------------- push subscriptions
    def create_push_subscription(
        self,
        client_id: str | None,
        client_secret: str | None,
        callback_url: str | None,
        verify_token: str | None,
    ) -> dict[str, Any]:
        """``POST /push_subscriptions``: validate the callback with a GET, then subscribe.

        Blocks for the validation request (up to ``push_ack_timeout``); call it off the
        event loop.
        """
        self.check_credentials(client_id, client_secret)
        parts = urlsplit(callback_url or "")
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise StravaApiError(
                400, error_body("Bad Request", "PushSubscription", "callback_url", "invalid")
            )
        if not verify_token:
            raise StravaApiError(
                400, error_body("Bad Request", "PushSubscription", "verify_token", "invalid")
            )
        assert callback_url is not None
        self._check_no_subscription()
        challenge = secrets.token_urlsafe(16)
        if not self._validate_callback(callback_url, verify_token, challenge):
            raise StravaApiError(
                400,
                error_body(
                    "Bad Request",
                    "PushSubscription",
                    "callback url",
                    "GET to callback URL does not return 200",
                ),
            )
        with self._lock:
            self._check_no_subscription()
            self._push_seq += 1
            now = self.time()
            self._push_subscription = PushSubscription(
                self._push_seq, callback_url, verify_token, now, now
            )
            return {"id": self._push_seq}

    def _check_no_subscription(self) -> None:
        with self._lock:
            if self._push_subscription is not None:
                raise StravaApiError(
                    400, error_body("Bad Request", "PushSubscription", "", "already exists")
                )

    def _validate_callback(self, callback_url: str, verify_token: str, challenge: str) -> bool:
        """Strava's validation GET: a 200 echoing ``hub.challenge`` within the ack time."""
        params = {
            "hub.mode": "subscribe",
            "hub.challenge": challenge,
            "hub.verify_token": verify_token,
        }
        timeout = self.config.push_ack_timeout
        started = time.monotonic()
        try:
            response = httpx.get(callback_url, params=params, timeout=timeout)
            body = response.json()
        except (httpx.HTTPError, ValueError) as exc:
            logger.info("push subscription validation failed: %s", type(exc).__name__)
            return False
        return (
            response.status_code == 200
            and time.monotonic() - started <= timeout
            and isinstance(body, dict)
            and body.get("hub.challenge") == challenge
        )

    def list_push_subscriptions(
        self, client_id: str | None, client_secret: str | None
    ) -> list[dict[str, Any]]:
        """``GET /push_subscriptions``: the application's subscriptions (zero or one)."""
        self.check_credentials(client_id, client_secret)
        with self._lock:
            sub = self._push_subscription
            if sub is None:
                return []
            app_id: int | str = (
                int(self.config.client_id)
                if self.config.client_id.isdigit()
                else self.config.client_id
            )
            return [
                {
                    "id": sub.id,
                    "resource_state": 2,
                    "application_id": app_id,
                    "callback_url": sub.callback_url,
                    "created_at": data.iso_z(sub.created_at),
                    "updated_at": data.iso_z(sub.updated_at),
                }
            ]

    def delete_push_subscription(
        self, client_id: str | None, client_secret: str | None, subscription_id: int
    ) -> None:
        """``DELETE /push_subscriptions/{id}``; events not yet delivered are dropped."""
        self.check_credentials(client_id, client_secret)
        with self._lock:
            sub = self._push_subscription
            if sub is None or sub.id != subscription_id:
                raise not_found("PushSubscription", "id")
            self._push_subscription = None
        with self._push_cond:
            dropped = [d for d in self._push_queue if d.subscription_id == subscription_id]
            self._push_queue = [d for d in self._push_queue if d not in dropped]
            self._push_stats["dropped"] += len(dropped)
            self._push_cond.notify_all()

    def push_subscription_id(self) -> int | None:
        """Id of the current subscription, if any."""
        with self._lock:
            return None if self._push_subscription is None else self._push_subscription.id

    def _grant_has(self, athlete_id: int, scope: str) -> bool:
        grant = self._grants.get(athlete_id)
        return grant is not None and scope in grant.scopes

    def _emit_push(
        self,
        object_type: str,
        object_id: int,
        aspect_type: str,
        owner_id: int,
        updates: dict[str, str] | None = None,
    ) -> None:
        """Queue an event for the subscription if the owner has authorized the app.

        Called with ``_lock`` held; only appends to the queue (delivery is in the worker).
        """
        sub = self._push_subscription
        if sub is None or owner_id not in self._grants:
            return
        event = {
            "aspect_type": aspect_type,
            "event_time": int(self.time()),
            "object_id": object_id,
            "object_type": object_type,
            "owner_id": owner_id,
            "subscription_id": sub.id,
            "updates": dict(updates or {}),
        }
        with self._push_cond:
            if self._push_closed:
                return
            self._push_queue.append(PushDelivery(sub.id, event, 0, time.monotonic()))
            if self._push_worker is None:
                self._push_worker = threading.Thread(
                    target=self._push_loop, name="strava-sandbox-push", daemon=True
                )
                self._push_worker.start()
            self._push_cond.notify_all()

    def _push_loop(self) -> None:
        """Deliver queued events in due order; exits when the queue is empty."""
        timeout = httpx.Timeout(self.config.push_ack_timeout)
        with httpx.Client(timeout=timeout, follow_redirects=False) as client:
            while True:
                with self._push_cond:
                    while True:
                        if self._push_closed or not self._push_queue:
                            self._push_worker = None
                            self._push_cond.notify_all()
                            return
                        item = min(self._push_queue, key=lambda d: d.due)
                        wait = item.due - time.monotonic()
                        if wait <= 0:
                            break
                        self._push_cond.wait(wait)
                    self._push_queue.remove(item)
                    self._push_in_flight += 1
                try:
                    acked = self._deliver_push(client, item)
                finally:
                    with self._push_cond:
                        self._push_in_flight -= 1
                        self._push_cond.notify_all()
                self._after_push(item, acked)

    def _deliver_push(self, client: httpx.Client, item: PushDelivery) -> bool | None:
        """POST one attempt; True when acknowledged in time, None when the subscription went."""
        with self._lock:
            sub = self._push_subscription
            if sub is None or sub.id != item.subscription_id:
                return None
            url = sub.callback_url
        item.attempts += 1
        if item.attempts > 1:
            with self._push_cond:
                self._push_stats["redelivered"] += 1
        started = time.monotonic()
        try:
            response = client.post(url, json=item.event)
        except Exception as exc:  # any failure is a missed ack; the worker must not die
            logger.info("push delivery attempt %d failed: %s", item.attempts, type(exc).__name__)
            return False
        return (
            response.status_code == 200
            and time.monotonic() - started <= self.config.push_ack_timeout
        )

    def _after_push(self, item: PushDelivery, acked: bool | None) -> None:
        with self._push_cond:
            if acked is None or (self._push_closed and not acked):
                self._push_stats["dropped"] += 1
            elif acked:
                self._push_stats["delivered"] += 1
            elif item.attempts >= self.config.push_max_attempts:
                self._push_stats["failed"] += 1
            else:
                backoff = self.config.push_retry_backoff * 2 ** (item.attempts - 1)
                item.due = time.monotonic() + self.config.scaled(backoff)
                self._push_queue.append(item)
            self._push_cond.notify_all()

    def wait_for_push_deliveries(self, timeout: float = 10.0) -> bool:
        """Block until every queued event is delivered or given up; False on timeout."""
        deadline = time.monotonic() + timeout
        with self._push_cond:
            while self._push_queue or self._push_in_flight:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._push_cond.wait(left)
            return True

    def push_stats(self) -> dict[str, int]:
        """Push delivery counters: delivered, redelivered, failed, dropped, pending."""
        with self._push_cond:
            return {
                "delivered": self._push_stats["delivered"],
                "redelivered": self._push_stats["redelivered"],
                "failed": self._push_stats["failed"],
                "dropped": self._push_stats["dropped"],
                "pending": len(self._push_queue) + self._push_in_flight,
            }

    def close(self, timeout: float = 10.0) -> None:
        """Stop push delivery: drop queued events and wait for an attempt in flight."""
        with self._push_cond:
            self._push_closed = True
            self._push_stats["dropped"] += len(self._push_queue)
            self._push_queue.clear()
            self._push_cond.notify_all()
            worker = self._push_worker
        if worker is not None:
            worker.join(timeout)

    # ------------------------------------------------------------------ stats
    def record_response(self, status: int) -> None:
        """Count a response status (429s also as ``rate_limited``)."""
        super().record_response(status)
        if status == 429:
            self.record("rate_limited")

    def stats(self) -> dict[str, Any]:
        """Counters since the last reset, plus current usage."""
        with self._lock:
            return {
                **self.request_stats(),
                "rate_limited": self._counters["rate_limited"],
                "usage": self.usage(),
                "refreshes": self._counters["refreshes"],
                "push": self.push_stats(),
            }

    def reset_stats(self) -> None:
        """Zero the counters (rate-limit usage is kept; see ``reset_usage``)."""
        super().reset_stats()
        with self._push_cond:
            self._push_stats.clear()


def _with_type(out: dict[str, Any], source: ActivityRecord | dict[str, Any]) -> dict[str, Any]:
    """Apply an edited activity type (``type`` override) to an API representation."""
    overrides = source.overrides if isinstance(source, ActivityRecord) else source
    if "type" in overrides:
        out["type"] = out["sport_type"] = overrides["type"]
    return out


def require_scope(token: AccessToken, scope: str) -> None:
    """Raise Strava's 401 if ``token`` lacks ``scope`` (``*:read_all`` implies ``*:read``)."""
    implied = {
        "activity:read": {"activity:read", "activity:read_all"},
        "read": {"read", "read_all"},
    }.get(scope, {scope})
    if not token.scopes & implied:
        raise StravaApiError(
            401, error_body("Authorization Error", "AccessToken", f"{scope}_permission", "missing")
        )
