"""Pieces every provider sandbox shares: clocks, seeded randomness, faults, windows, OAuth.

A provider sandbox (``sync_pipeline/sandbox/<provider>/``) is a ``state.py`` holding the
provider's data and rules in memory and an ``app.py`` serving them over HTTP with the
provider's paths, payloads and headers. What is not provider-specific lives here, so that
fault injection, the simulated clock and token lifetimes behave the same in every sandbox.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import random
import secrets
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from typing import Any

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


def rng_for(*parts: object) -> random.Random:
    """A ``random.Random`` seeded stably from the given parts (same parts, same data)."""
    digest = hashlib.sha256(":".join(str(p) for p in parts).encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


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


def control_endpoint(fn: ControlFn) -> Callable[[Request], Awaitable[Response]]:
    """Wrap a ``/_sandbox`` handler: JSON result, 400 with the reason on bad input."""

    async def endpoint(request: Request) -> Response:
        try:
            return JSONResponse(await fn(request))
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


def control_routes(hooks: ControlHooks) -> list[Route]:
    """``/_sandbox/faults`` (POST/GET/DELETE), ``/_sandbox/clock``, stats and usage reset."""

    async def add_fault(request: Request) -> Any:
        body = await json_body(request)
        fault_id = hooks.faults.inject(
            str(body["kind"]),
            count=int(body.get("count", 1)),
            path_contains=body.get("path_contains"),
            principal=body.get("principal"),
            delay=float(body.get("delay", 0.0)),
            status=body.get("status"),
        )
        return {"id": fault_id}

    async def list_faults(request: Request) -> Any:
        return hooks.faults.list()

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

    return [
        Route("/_sandbox/faults", control_endpoint(add_fault), methods=["POST"]),
        Route("/_sandbox/faults", control_endpoint(list_faults), methods=["GET"]),
        Route("/_sandbox/faults", control_endpoint(clear_faults), methods=["DELETE"]),
        Route("/_sandbox/clock", control_endpoint(clock), methods=["GET", "POST"]),
        Route("/_sandbox/stats", control_endpoint(stats), methods=["GET"]),
        Route("/_sandbox/reset-usage", control_endpoint(reset_usage), methods=["POST"]),
        *hooks.extra,
    ]
