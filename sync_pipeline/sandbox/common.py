"""Pieces every provider sandbox shares: clocks, seeded randomness, faults, windows, OAuth.

A provider sandbox (``sync_pipeline/sandbox/<provider>/``) is a ``state.py`` holding the
provider's data and rules in memory and an ``app.py`` serving them over HTTP with the
provider's paths, payloads and headers. What is not provider-specific lives here, so that
fault injection, the simulated clock and token lifetimes behave the same in every sandbox.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import json
import random
import secrets
import threading
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from datetime import date, datetime, timedelta, tzinfo
from typing import Any, Generic, Protocol, TypeVar
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit
from zoneinfo import ZoneInfo

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

Clock = Callable[[], float]

#: Fault kinds every sandbox understands. ``status`` picks the HTTP status of ``error``.
FAULT_KINDS = frozenset({"5xx", "timeout", "slow", "429", "error"})


class ManualClock:
    """A clock tests can move by hand; call it to read the time."""

    def __init__(self, start: float = 1_750_000_000.0) -> None:
        self._t = float(start)
        self._lock = threading.Lock()

    def __call__(self) -> float:
        with self._lock:
            return self._t

    def advance(self, seconds: float) -> float:
        """Move the clock forward and return the new time."""
        with self._lock:
            self._t += seconds
            return self._t

    def set(self, t: float) -> None:
        """Jump to an absolute time."""
        with self._lock:
            self._t = float(t)


class ScaledClock:
    """Wall-clock time running ``scale`` times faster from ``start`` (compresses windows)."""

    def __init__(self, scale: float = 1.0, start: float | None = None) -> None:
        self.scale = scale
        self._origin = time.time() if start is None else start
        self._mono = time.monotonic()
        self._offset = 0.0
        self._lock = threading.Lock()

    def __call__(self) -> float:
        with self._lock:
            return self._origin + (time.monotonic() - self._mono) * self.scale + self._offset

    def advance(self, seconds: float) -> float:
        """Jump forward by ``seconds`` of simulated time."""
        with self._lock:
            self._offset += seconds
        return self()


def seed_for(*parts: object) -> int:
    """A 64-bit seed derived stably from the given parts (same parts, same seed)."""
    digest = hashlib.sha256(":".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(digest[:8], "big")


def rng_for(*parts: object) -> random.Random:
    """A ``random.Random`` seeded stably from the given parts (same parts, same data)."""
    return random.Random(seed_for(*parts))


def streak_days(
    rng: random.Random,
    today: date,
    days: int,
    *,
    first: float,
    stay: float,
    start: float,
    weekend: float = 1.0,
) -> Iterator[date]:
    """The active days among the ``days`` up to ``today`` of a two-state chain.

    The chain starts active with probability ``first``; a day is active with probability
    ``stay`` after an active day and ``start`` after an idle one, times ``weekend`` on
    Saturdays and Sundays. One draw per day, made when the caller asks for the next day, so
    the caller's own draws in between keep their place in the sequence.
    """
    active = rng.random() < first
    for back in range(days - 1, -1, -1):
        day = today - timedelta(days=back)
        p = stay if active else start
        if day.weekday() >= 5:
            p *= weekend
        active = rng.random() < p
        if active:
            yield day


def random_local_time(rng: random.Random, day: date, hour: int, tz: tzinfo) -> int:
    """Epoch seconds of a random minute and second of ``hour`` on the local ``day`` in ``tz``."""
    minute, second = rng.randrange(60), rng.randrange(60)
    return int(datetime(day.year, day.month, day.day, hour, minute, second, tzinfo=tz).timestamp())


A = TypeVar("A")


class AccountIndex(dict[str, A]):
    """Accounts by id (in creation order), also found by username (``@`` optional)."""

    def __init__(self) -> None:
        super().__init__()
        self._by_username: dict[str, str] = {}

    def add(self, account_id: str, username: str, account: A) -> A:
        """Register an account under its id and its lower-cased username."""
        self[account_id] = account
        self._by_username[username.lower()] = account_id
        return account

    def has_username(self, username: str) -> bool:
        """Whether ``username`` (as given) is a registered, lower-cased username."""
        return username in self._by_username

    def find(self, ref: str | int) -> A:
        """An account by id or username (case-insensitive); KeyError when unknown."""
        key = str(ref)
        if key in self:
            return self[key]
        account_id = self._by_username.get(key.lstrip("@").lower())
        if account_id is None:
            raise KeyError(f"unknown account {ref!r}")
        return self[account_id]

    def first_not_in(self, ids: set[str]) -> str:
        """The oldest account id not in ``ids`` (the oldest of all when every one is)."""
        return next((a for a in self if a not in ids), next(iter(self)))


class ScaledConfig:
    """Mixin of sandbox configs: provider durations compressed by ``time_scale``."""

    time_scale: float

    def scaled(self, seconds: float) -> float:
        """A provider duration compressed by ``time_scale``."""
        return seconds / self.time_scale


@dataclass
class RateDecision:
    """Outcome of counting one API request: the rate headers to send and whether it is refused."""

    headers: dict[str, str]
    limited: bool


class SandboxApiError(Exception):
    """An HTTP error a sandbox answers with: status, the provider's JSON body, extra headers."""

    def __init__(
        self, status: int, body: dict[str, Any], headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(f"{status}: {body}")
        self.status = status
        self.body = body
        self.headers = headers or {}


@dataclass
class Fault:
    """An injected fault waiting to fire ``remaining`` more times."""

    id: int
    kind: str
    remaining: int
    path_contains: str | None = None
    principal: str | None = None
    delay: float = 0.0
    status: int | None = None

    def as_dict(self) -> dict[str, Any]:
        """JSON form."""
        return asdict(self)


class FaultBook:
    """Thread-safe list of injected faults, matched by path substring and principal.

    The principal is whatever the provider authenticates (user id, account handle); ``None``
    on a fault matches every caller.
    """

    def __init__(self, kinds: frozenset[str] = FAULT_KINDS) -> None:
        self.kinds = kinds
        self._faults: list[Fault] = []
        self._seq = 0
        self._lock = threading.Lock()

    def inject(
        self,
        kind: str,
        count: int = 1,
        path_contains: str | None = None,
        principal: str | int | None = None,
        delay: float = 0.0,
        status: int | None = None,
    ) -> int:
        """Add a fault that fires ``count`` times; returns its id."""
        if kind not in self.kinds:
            raise ValueError(f"unknown fault kind {kind!r}; known: {sorted(self.kinds)}")
        if count < 1:
            raise ValueError("count must be >= 1")
        if kind == "5xx" and status is not None and not 500 <= status <= 599:
            raise ValueError("status must be 5xx")
        with self._lock:
            self._seq += 1
            who = None if principal is None else str(principal)
            self._faults.append(Fault(self._seq, kind, count, path_contains, who, delay, status))
            return self._seq

    def take(self, path: str, principal: str | int | None) -> Fault | None:
        """Consume one firing of the first fault matching this request."""
        who = None if principal is None else str(principal)
        with self._lock:
            for fault in self._faults:
                if fault.path_contains and fault.path_contains not in path:
                    continue
                if fault.principal is not None and fault.principal != who:
                    continue
                fault.remaining -= 1
                if fault.remaining <= 0:
                    self._faults.remove(fault)
                fired = Fault(**fault.as_dict())
                fired.remaining = 1
                return fired
            return None

    def list(self) -> list[dict[str, Any]]:
        """Pending faults."""
        with self._lock:
            return [f.as_dict() for f in self._faults]

    def clear(self) -> int:
        """Drop all pending faults; returns how many."""
        with self._lock:
            n = len(self._faults)
            self._faults.clear()
            return n


async def wait_or_disconnect(request: Request, seconds: float) -> bool:
    """Sleep up to ``seconds``; return True if the client went away first."""
    deadline = time.monotonic() + seconds
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        await asyncio.sleep(min(0.05, left))
        if await request.is_disconnected():
            return True


async def apply_delay(fault: Fault, request: Request) -> bool:
    """Handle the waiting part of ``slow``/``timeout`` faults.

    Returns True when the request should go on normally (``slow``), False when the caller
    must answer with the provider's gateway-timeout response (``timeout``).
    """
    if fault.kind == "slow":
        await asyncio.sleep(max(0.0, fault.delay))
        return True
    if fault.kind == "timeout":
        await wait_or_disconnect(request, fault.delay if fault.delay > 0 else 30.0)
        return False
    if fault.delay > 0:
        await asyncio.sleep(fault.delay)
    return False


class WindowCounter:
    """Fixed-window counters keyed by name: ``add`` charges ``cost`` in the window of ``now``.

    ``window_start`` lets a provider align windows to its own boundaries (e.g. midnight in
    America/Los_Angeles for YouTube quota); the default aligns to multiples of the length.
    """

    def __init__(self) -> None:
        self._used: dict[str, tuple[float, int]] = {}
        self._lock = threading.Lock()

    @staticmethod
    def aligned_start(now: float, length: float) -> float:
        """Start of the fixed window of ``length`` seconds containing ``now``."""
        return (now // length) * length

    def add(self, name: str, start: float, cost: int = 1) -> int:
        """Charge ``cost`` to the window starting at ``start``; returns the usage after it."""
        with self._lock:
            old_start, used = self._used.get(name, (start, 0))
            used = used + cost if old_start == start else cost
            self._used[name] = (start, used)
            return used

    def peek(self, name: str, start: float) -> int:
        """Usage of the window starting at ``start`` (0 when a newer window began)."""
        with self._lock:
            old_start, used = self._used.get(name, (start, 0))
            return used if old_start == start else 0

    def reset(self) -> None:
        """Forget all usage."""
        with self._lock:
            self._used.clear()


@dataclass
class IssuedToken:
    """An access token the sandbox handed out."""

    value: str
    principal: str
    scopes: frozenset[str]
    expires_at: float | None  # None: never expires
    revoked: bool = False


@dataclass
class RefreshGrant:
    """A refresh token and what it refreshes."""

    value: str
    principal: str
    scopes: frozenset[str]
    used: bool = False


@dataclass
class PendingCode:
    """An authorization code waiting to be exchanged."""

    value: str
    principal: str
    scopes: frozenset[str]
    redirect_uri: str
    expires_at: float
    code_challenge: str | None = None
    used: bool = False


@dataclass
class TokenPolicy:
    """How a provider's tokens live: access lifetime, refresh behaviour."""

    access_seconds: float | None  # None: access tokens never expire
    issues_refresh: bool = True
    rotate_refresh: bool = False  # a refresh returns a new refresh token, the old one dies
    code_seconds: float = 600.0
    prefix: str = "sbx"


class OAuthIssuer:
    """Authorization codes, access tokens and refresh tokens with a provider's policy.

    Thread-safe; times come from the sandbox clock so tests and time scales can expire
    tokens. Providers wrap it with their own endpoints and error bodies.
    """

    def __init__(self, policy: TokenPolicy, clock: Clock) -> None:
        self.policy = policy
        self.clock = clock
        self._codes: dict[str, PendingCode] = {}
        self._access: dict[str, IssuedToken] = {}
        self._refresh: dict[str, RefreshGrant] = {}
        self._lock = threading.Lock()

    def _new(self, kind: str) -> str:
        return f"{self.policy.prefix}_{kind}_{secrets.token_urlsafe(18)}"

    def new_code(
        self,
        principal: str,
        scopes: frozenset[str],
        redirect_uri: str,
        code_challenge: str | None = None,
    ) -> str:
        """Issue an authorization code for ``principal``."""
        with self._lock:
            code = self._new("code")
            expires = self.clock() + self.policy.code_seconds
            self._codes[code] = PendingCode(
                code, principal, scopes, redirect_uri, expires, code_challenge
            )
            return code

    def take_code(self, code: str | None, redirect_uri: str | None = None) -> PendingCode | None:
        """Consume a code; None when unknown, used, expired or for another redirect URI."""
        with self._lock:
            pending = self._codes.get(code or "")
            if pending is None or pending.used or pending.expires_at < self.clock():
                return None
            if redirect_uri is not None and redirect_uri != pending.redirect_uri:
                return None
            pending.used = True
            return pending

    def issue(self, principal: str, scopes: frozenset[str]) -> tuple[IssuedToken, str | None]:
        """A new access token (and refresh token when the policy issues them)."""
        with self._lock:
            return self._issue_locked(principal, scopes)

    def _issue_locked(
        self, principal: str, scopes: frozenset[str]
    ) -> tuple[IssuedToken, str | None]:
        lifetime = self.policy.access_seconds
        expires = None if lifetime is None else self.clock() + lifetime
        access = IssuedToken(self._new("access"), principal, scopes, expires)
        self._access[access.value] = access
        refresh: str | None = None
        if self.policy.issues_refresh:
            refresh = self._new("refresh")
            self._refresh[refresh] = RefreshGrant(refresh, principal, scopes)
        return access, refresh

    def refresh(self, refresh_token: str | None) -> tuple[IssuedToken, str | None] | None:
        """Exchange a refresh token; None when it is unknown, revoked or already rotated.

        With rotation the old refresh token dies and a new one is returned; without it the
        same refresh token is returned and stays valid.
        """
        with self._lock:
            grant = self._refresh.get(refresh_token or "")
            if grant is None or grant.used:
                return None
            lifetime = self.policy.access_seconds
            expires = None if lifetime is None else self.clock() + lifetime
            access = IssuedToken(self._new("access"), grant.principal, grant.scopes, expires)
            self._access[access.value] = access
            if not self.policy.rotate_refresh:
                return access, grant.value
            grant.used = True
            new = self._new("refresh")
            self._refresh[new] = RefreshGrant(new, grant.principal, grant.scopes)
            return access, new

    def extend(self, access_token: str | None, seconds: float) -> IssuedToken | None:
        """Long-lived token refresh (Instagram): a new token for a still-valid one."""
        with self._lock:
            old = self.authenticate_locked(access_token)
            if old is None:
                return None
            expires = self.clock() + seconds
            token = IssuedToken(self._new("access"), old.principal, old.scopes, expires)
            self._access[token.value] = token
            return token

    def authenticate_locked(self, access_token: str | None) -> IssuedToken | None:
        """The live token for this value (caller holds no lock or this issuer's lock)."""
        token = self._access.get(access_token or "")
        if token is None or token.revoked:
            return None
        if token.expires_at is not None and token.expires_at <= self.clock():
            return None
        return token

    def authenticate(self, access_token: str | None) -> IssuedToken | None:
        """The live token for this value, or None (unknown, revoked or expired)."""
        with self._lock:
            return self.authenticate_locked(access_token)

    def principal_of(self, access_token: str | None) -> str | None:
        """Who a token belongs to, even if expired (for fault matching and stats)."""
        with self._lock:
            token = self._access.get(access_token or "")
            return None if token is None else token.principal

    def expire(self, principal: str) -> int:
        """Expire every access token of ``principal`` now (tests: force a refresh)."""
        with self._lock:
            n = 0
            for token in self._access.values():
                if token.principal == principal and not token.revoked:
                    token.expires_at = self.clock()
                    n += 1
            return n

    def revoke(self, principal: str) -> int:
        """Revoke every access and refresh token of ``principal``; returns how many."""
        with self._lock:
            n = 0
            for token in self._access.values():
                if token.principal == principal and not token.revoked:
                    token.revoked = True
                    n += 1
            for grant in self._refresh.values():
                if grant.principal == principal and not grant.used:
                    grant.used = True
                    n += 1
            return n


def bearer(request: Request) -> str | None:
    """The token of an ``Authorization: Bearer``/``token`` header, or None."""
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() in {"bearer", "token"} and value.strip():
        return value.strip()
    return None


def basic_credentials(request: Request) -> tuple[str, str] | None:
    """``(user, password)`` of an ``Authorization: Basic`` header; None without or malformed."""
    scheme, _, value = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        user, _, password = base64.b64decode(value).decode().partition(":")
    except (ValueError, binascii.Error):
        return None
    return user, password


async def request_params(
    request: Request, *, encode: Callable[[Any], str] = str, keep_none: bool = False
) -> dict[str, str]:
    """Query string merged with a form or JSON body (token endpoints take all three).

    Non-string JSON values go through ``encode``; nulls are dropped unless ``keep_none``.
    A malformed JSON body raises ValueError.
    """
    params = dict(request.query_params)
    raw = await request.body()
    if not raw.strip():
        return params
    if "json" in request.headers.get("content-type", ""):
        loaded = json.loads(raw)
        if isinstance(loaded, dict):
            params.update(
                {
                    k: v if isinstance(v, str) else encode(v)
                    for k, v in loaded.items()
                    if keep_none or v is not None
                }
            )
    else:
        params.update(dict(parse_qsl(raw.decode("utf-8", "replace"), keep_blank_values=True)))
    return params


def with_query(
    url: str, params: Mapping[str, str], *, safe: str = "", fragment: str | None = None
) -> str:
    """``url`` with ``params`` appended to its query (and its fragment replaced if given)."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True) + list(params.items())
    parts = parts._replace(query=urlencode(query, safe=safe))
    return urlunsplit(parts if fragment is None else parts._replace(fragment=fragment))


FireFn = Callable[[Fault, Request], Awaitable[Response | None]]


async def fault_guard(
    state: SandboxState[Any], request: Request, endpoint: str, principal: object, fire: FireFn
) -> Response | None:
    """Count a request and fire the first matching fault through ``fire``.

    Returns the fault's response (its status counted), or None when the request goes on
    (no fault, or only a ``slow`` one).
    """
    state.record_request(endpoint)
    fault = state.faults.take(request.url.path, None if principal is None else str(principal))
    if fault is None:
        return None
    response = await fire(fault, request)
    return None if response is None else state.finish(response)


def sandbox_app(state: SandboxState[Any], routes: list[Route]) -> Starlette:
    """The ASGI app serving ``routes``, with the state at ``app.state.sandbox``."""
    app = Starlette(routes=routes)
    app.state.sandbox = state
    return app


async def json_body(request: Request) -> dict[str, Any]:
    """The JSON object of a request body ({} when empty); ValueError when not an object."""
    raw = await request.body()
    if not raw.strip():
        return {}
    data = json.loads(raw)
    if not isinstance(data, dict):
        raise ValueError("body must be a JSON object")
    return data


ControlFn = Callable[[Request], Awaitable[Any]]


def fault_args(body: Mapping[str, Any]) -> dict[str, Any]:
    """The ``FaultBook.inject`` arguments a ``POST /_sandbox/faults`` body gives, but whose."""
    return {
        "kind": str(body["kind"]),
        "count": int(body.get("count", 1)),
        "path_contains": body.get("path_contains"),
        "delay": float(body.get("delay", 0.0)),
        "status": body.get("status"),
    }


T = TypeVar("T")


def optional(body: Mapping[str, Any], name: str, kind: Callable[[Any], T]) -> T | None:
    """``kind(body[name])``, or None when the control body leaves ``name`` out or null."""
    value = body.get(name)
    return None if value is None else kind(value)


def flag(query: Mapping[str, str], name: str, default: bool = True) -> bool:
    """A boolean query parameter: anything but ``0``/``false`` is true."""
    raw = query.get(name)
    return default if raw is None else raw.lower() not in ("0", "false")


def control_endpoint(fn: ControlFn) -> Callable[[Request], Awaitable[Response]]:
    """Wrap a ``/_sandbox`` handler: JSON result, 400 with the reason on bad input."""

    async def endpoint(request: Request) -> Response:
        try:
            return JSONResponse(await fn(request))
        except SandboxApiError as exc:
            return JSONResponse(exc.body, exc.status, headers=exc.headers)
        except (ValueError, TypeError, KeyError) as exc:
            return JSONResponse({"message": f"bad request: {exc}"}, 400)

    return endpoint


@dataclass
class ControlHooks:
    """What the shared ``/_sandbox`` routes act on."""

    faults: FaultBook
    clock: Clock
    advance: Callable[[float], float] | None = None
    stats: Callable[[], dict[str, Any]] | None = None
    reset_usage: Callable[[], None] | None = None
    extra: list[Route] = field(default_factory=list)
    #: Replaces the plain ``FaultBook.inject`` for ``POST /_sandbox/faults`` (the JSON body).
    inject: Callable[[dict[str, Any]], Any] | None = None
    #: Lists pending faults for ``GET /_sandbox/faults`` instead of ``FaultBook.list``.
    list_faults: Callable[[], Any] | None = None
    #: Served as ``POST /_sandbox/reset-stats`` when given.
    reset_stats: Callable[[], None] | None = None


def control_routes(hooks: ControlHooks) -> list[Route]:
    """``/_sandbox/faults`` (POST/GET/DELETE), ``/_sandbox/clock``, stats and usage reset."""

    async def add_fault(request: Request) -> Any:
        body = await json_body(request)
        if hooks.inject is not None:
            return {"id": hooks.inject(body)}
        return {"id": hooks.faults.inject(**fault_args(body), principal=body.get("principal"))}

    async def list_faults(request: Request) -> Any:
        return hooks.list_faults() if hooks.list_faults else hooks.faults.list()

    async def clear_faults(request: Request) -> Any:
        return {"cleared": hooks.faults.clear()}

    async def clock(request: Request) -> Any:
        if request.method == "POST":
            body = await json_body(request)
            if hooks.advance is None:
                raise ValueError("this sandbox's clock cannot be moved")
            hooks.advance(float(body.get("advance", 0.0)))
        return {"now": hooks.clock()}

    async def stats(request: Request) -> Any:
        return hooks.stats() if hooks.stats else {}

    async def reset_usage(request: Request) -> Any:
        if hooks.reset_usage is not None:
            hooks.reset_usage()
        return {"ok": True}

    async def reset_stats(request: Request) -> Any:
        if hooks.reset_stats is not None:
            hooks.reset_stats()
        return {"ok": True}

    resets = [Route("/_sandbox/reset-stats", control_endpoint(reset_stats), methods=["POST"])]
    return [
        Route("/_sandbox/faults", control_endpoint(add_fault), methods=["POST"]),
        Route("/_sandbox/faults", control_endpoint(list_faults), methods=["GET"]),
        Route("/_sandbox/faults", control_endpoint(clear_faults), methods=["DELETE"]),
        Route("/_sandbox/clock", control_endpoint(clock), methods=["GET", "POST"]),
        Route("/_sandbox/stats", control_endpoint(stats), methods=["GET"]),
        Route("/_sandbox/reset-usage", control_endpoint(reset_usage), methods=["POST"]),
        *(resets if hooks.reset_stats is not None else []),
        *hooks.extra,
    ]


class SandboxConfigLike(Protocol):
    """What every sandbox config has: a seed, a time scale and an optional data anchor."""

    seed: int
    time_scale: float
    anchor_epoch: float | None


ConfigT = TypeVar("ConfigT", bound=SandboxConfigLike)


class SandboxState(Generic[ConfigT]):
    """Base of every sandbox's in-memory state: what is not the provider's API.

    It holds the config, the clock (``now`` plus the offset ``advance_clock`` adds), the
    state lock, the data anchor, the fault book, request/response counters and the shared
    ``/_sandbox`` control routes. A provider's state subclasses it, names its
    ``config_type``, builds its data, tokens and rate rules in ``setup`` and keeps only its
    API; ``namespace`` keys its seeded randomness.
    """

    namespace = "sandbox"
    #: The config class; ``config=None`` builds its defaults.
    config_type: type[ConfigT]
    #: Fault kinds this sandbox accepts.
    fault_kinds: frozenset[str] = FAULT_KINDS

    def __init__(self, config: ConfigT | None = None, now: Clock | None = None) -> None:
        config = self.config_type() if config is None else config
        if config.time_scale <= 0:
            raise ValueError("time_scale must be positive")
        self.config: ConfigT = config
        self.now: Clock = now or time.time
        self._offset = 0.0
        self._lock = threading.RLock()
        self.anchor = float(config.anchor_epoch if config.anchor_epoch is not None else self.time())
        self.faults = FaultBook(self.fault_kinds)
        self._requests: Counter[str] = Counter()
        self._statuses: Counter[str] = Counter()
        self._counters: Counter[str] = Counter()
        self.setup()

    def setup(self) -> None:
        """Build the provider's data, tokens and limits (called at the end of ``__init__``)."""

    # ----------------------------------------------------------------- time
    def time(self) -> float:
        """Current sandbox time: the clock plus any offset from ``advance_clock``."""
        return self.now() + self._offset

    def advance_clock(self, seconds: float) -> float:
        """Shift sandbox time forward (works with any clock) and return the new time."""
        with self._lock:
            self._offset += seconds
            return self.time()

    def scaled(self, seconds: float) -> float:
        """A provider duration compressed by the config's ``time_scale``."""
        return seconds / self.config.time_scale

    def token_policy(
        self,
        access_seconds: float | None,
        code_seconds: float,
        prefix: str,
        *,
        issues_refresh: bool = True,
        rotate_refresh: bool = False,
    ) -> TokenPolicy:
        """The provider's token lifetimes, compressed by ``time_scale``."""
        access = None if access_seconds is None else self.scaled(access_seconds)
        return TokenPolicy(
            access, issues_refresh, rotate_refresh, self.scaled(code_seconds), prefix
        )

    def rng(self, *parts: object) -> random.Random:
        """Randomness seeded from this sandbox's namespace, seed and ``parts``."""
        return rng_for(self.namespace, self.config.seed, *parts)

    def owner_in(self, table: Mapping[str, Any], key: str | None) -> str | None:
        """``principal`` of the entry ``key`` of a code or token table, or None (fault matching)."""
        with self._lock:
            entry = table.get(key or "")
            return None if entry is None else str(entry.principal)

    # ---------------------------------------------------------------- stats
    def record_request(self, endpoint: str) -> None:
        """Count a request to an endpoint (``"GET /2/users/me"``)."""
        with self._lock:
            self._requests[endpoint] += 1

    def record_response(self, status: int) -> None:
        """Count a response status."""
        with self._lock:
            self._statuses[str(status)] += 1

    def finish(self, response: Response) -> Response:
        """Count a response's status and return it."""
        self.record_response(response.status_code)
        return response

    def record(self, counter: str, n: int = 1) -> None:
        """Bump a named counter (faults fired, refreshes, ...)."""
        with self._lock:
            self._counters[counter] += n

    def request_stats(self) -> dict[str, Any]:
        """Requests in all, per endpoint and responses per status since the last reset."""
        with self._lock:
            return {
                "requests_total": sum(self._requests.values()),
                "requests_by_endpoint": dict(self._requests),
                "responses_by_status": dict(self._statuses),
            }

    def stats(self) -> dict[str, Any]:
        """Counters since the last reset (providers add their usage figures)."""
        return self.request_stats()

    def reset_stats(self) -> None:
        """Zero the counters (rate-limit usage is kept; see ``reset_usage``)."""
        with self._lock:
            self._requests.clear()
            self._statuses.clear()
            self._counters.clear()

    def reset_usage(self) -> None:
        """Forget all rate-limit usage (providers with limits override it)."""

    # -------------------------------------------------------------- control
    def inject_control_fault(self, body: dict[str, Any]) -> Any:
        """``POST /_sandbox/faults``: add a fault described by a JSON body; returns its id."""
        return self.faults.inject(**fault_args(body), principal=body.get("principal"))

    def list_control_faults(self) -> list[dict[str, Any]]:
        """``GET /_sandbox/faults``: the pending faults."""
        return self.faults.list()

    def extra_control_routes(self) -> list[Route]:
        """The provider's own ``/_sandbox`` routes (accounts, exhaustion, ...)."""
        return []

    def control_routes(self) -> list[Route]:
        """Every ``/_sandbox`` route of this sandbox: faults, clock, stats, resets, extras."""
        return control_routes(
            ControlHooks(
                faults=self.faults,
                clock=self.time,
                advance=self.advance_clock,
                stats=self.stats,
                reset_usage=self.reset_usage,
                extra=self.extra_control_routes(),
                inject=self.inject_control_fault,
                list_faults=self.list_control_faults,
                reset_stats=self.reset_stats,
            )
        )


class AccountSandboxState(SandboxState[ConfigT]):
    """A sandbox whose people are accounts served by the shared ``/_sandbox/accounts`` routes.

    Subclasses implement the ``control_*`` hooks, ``list_accounts``, ``revoke`` and ``expire``;
    each hook gets the request's parsed JSON body or query and the account reference.
    """

    def list_accounts(self) -> list[dict[str, Any]]:
        """Control view of every account."""
        raise NotImplementedError

    def revoke(self, ref: str) -> int:
        """Revoke an account's grant; returns how many tokens died."""
        raise NotImplementedError

    def expire(self, ref: str) -> int:
        """Expire an account's access tokens now; returns how many."""
        raise NotImplementedError

    def control_add_account(self, body: dict[str, Any]) -> Any:
        """``POST /_sandbox/accounts``."""
        raise NotImplementedError

    def control_add_items(self, ref: str, body: dict[str, Any]) -> list[str]:
        """``POST /_sandbox/accounts/{id}/items``: ids of the new items."""
        raise NotImplementedError

    def control_tokens(self, ref: str, body: dict[str, Any]) -> Any:
        """``POST /_sandbox/accounts/{id}/tokens``: a token response for the account."""
        raise NotImplementedError

    def control_daily_counts(self, ref: str, query: Mapping[str, str]) -> Any:
        """``GET /_sandbox/accounts/{id}/daily-counts``."""
        raise NotImplementedError

    def control_exhaust(self, body: dict[str, Any]) -> Any:
        """``POST /_sandbox/exhaust``: use up a rate budget."""
        raise NotImplementedError

    def extra_control_routes(self) -> list[Route]:
        """The shared account routes plus ``/_sandbox/exhaust``."""
        return account_control_routes(self)


class HistoryAccountSandboxState(AccountSandboxState[ConfigT]):
    """An account sandbox whose accounts get a generated history of dated items.

    ``POST /_sandbox/accounts`` takes ``history_days``, ``count`` and ``time_zone``; items are
    added ``count`` at a time, starting ``at`` or ending now; daily counts can be limited to
    the items the API can still reach.
    """

    def add_account(
        self, history_days: int | None = None, count: int | None = None, tz: str | None = None
    ) -> dict[str, Any]:
        """Create one more account; its control view."""
        raise NotImplementedError

    def add_items(self, ref: str | int, count: int = 1, at: float | None = None) -> list[str]:
        """Add ``count`` items one second apart; their ids."""
        raise NotImplementedError

    def daily_counts(
        self, ref: str | int, tz: str | None = None, reachable_only: bool = True
    ) -> dict[str, int]:
        """Items per local day (ISO date -> count) in ``tz`` (default: the account's)."""
        raise NotImplementedError

    def control_add_account(self, body: dict[str, Any]) -> Any:
        """``POST /_sandbox/accounts``: ``history_days``, ``count`` and ``time_zone``."""
        days, count = optional(body, "history_days", int), optional(body, "count", int)
        return self.add_account(history_days=days, count=count, tz=body.get("time_zone"))

    def control_add_items(self, ref: str, body: dict[str, Any]) -> list[str]:
        """New items: ``count`` of them, starting ``at`` or ending now."""
        return self.add_items(ref, int(body.get("count", 1)), optional(body, "at", float))

    def control_daily_counts(self, ref: str, query: Mapping[str, str]) -> Any:
        """Items per local day in ``tz``; ``reachable_only`` (default true)."""
        return self.daily_counts(ref, query.get("tz"), flag(query, "reachable_only"))


def check_history(days: int, time_zone: str | None) -> None:
    """ValueError for a negative history length or an unknown IANA time zone."""
    if days < 0:
        raise ValueError("history_days must be >= 0")
    if time_zone is not None:
        ZoneInfo(time_zone)  # raises for an unknown zone


def account_control_routes(state: AccountSandboxState[Any]) -> list[Route]:
    """``/_sandbox/accounts`` routes (list, add, items, revoke, expire, tokens, daily counts)."""

    def ref(request: Request) -> str:
        return str(request.path_params["id"])

    async def accounts(request: Request) -> Any:
        return state.list_accounts()

    async def add_account(request: Request) -> Any:
        return state.control_add_account(await json_body(request))

    async def add_items(request: Request) -> Any:
        return {"ids": state.control_add_items(ref(request), await json_body(request))}

    async def revoke(request: Request) -> Any:
        return {"revoked": state.revoke(ref(request))}

    async def expire(request: Request) -> Any:
        return {"expired": state.expire(ref(request))}

    async def tokens(request: Request) -> Any:
        return state.control_tokens(ref(request), await json_body(request))

    async def daily(request: Request) -> Any:
        return state.control_daily_counts(ref(request), request.query_params)

    async def exhaust(request: Request) -> Any:
        return state.control_exhaust(await json_body(request))

    wrap = control_endpoint
    return [
        Route("/_sandbox/accounts", wrap(accounts), methods=["GET"]),
        Route("/_sandbox/accounts", wrap(add_account), methods=["POST"]),
        Route("/_sandbox/accounts/{id}/items", wrap(add_items), methods=["POST"]),
        Route("/_sandbox/accounts/{id}/revoke", wrap(revoke), methods=["POST"]),
        Route("/_sandbox/accounts/{id}/expire", wrap(expire), methods=["POST"]),
        Route("/_sandbox/accounts/{id}/tokens", wrap(tokens), methods=["POST"]),
        Route("/_sandbox/accounts/{id}/daily-counts", wrap(daily), methods=["GET"]),
        Route("/_sandbox/exhaust", wrap(exhaust), methods=["POST"]),
    ]
